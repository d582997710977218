"""Redis key names.

Every key of one experiment carries the hash tag ``{experiment}``, so that an
experiment's parameters, stream and bookkeeping share one Redis Cluster slot
and a Lua script or MULTI over them stays legal.
"""


def stream(experiment: str) -> str:
    """The experiment's event stream (decisions, rewards, config versions)."""
    return f"bd:{{{experiment}}}:events"


def decision(experiment: str, decision_id: str) -> str:
    """The hash the reward path checks a reward against."""
    return f"bd:{{{experiment}}}:d:{decision_id}"


def pending(experiment: str) -> str:
    """Sorted set of open decisions, scored by their reward deadline (ms)."""
    return f"bd:{{{experiment}}}:pending"


def request(experiment: str, request_id: str) -> str:
    """The stored response of an idempotent /choose request."""
    return f"bd:{{{experiment}}}:req:{request_id}"


def request_fingerprint(experiment: str, request_id: str) -> str:
    """What the idempotent /choose request asked (a hash of its body), to refuse another body
    under the same request id."""
    return f"bd:{{{experiment}}}:reqfp:{request_id}"


def arm_registry(experiment: str) -> str:
    """Set of the arm ids a dynamic catalogue has shown (bounded by ``max_arms``)."""
    return f"bd:{{{experiment}}}:arms"


def segments(experiment: str) -> str:
    """Set of the segments (``segment_by`` values) seen, bounded by ``max_segments``."""
    return f"bd:{{{experiment}}}:segments"


def arm(experiment: str, model_id: str, arm_id: str) -> str:
    """One arm's parameters (A, A_inv, b, theta, counts, version)."""
    return f"bd:{{{experiment}}}:m:{model_id}:arm:{arm_id}"


def arm_versions(experiment: str, model_id: str) -> str:
    """Hash of arm id to parameter version, for cheap cache refreshes."""
    return f"bd:{{{experiment}}}:m:{model_id}:versions"


def applied(experiment: str) -> str:
    """The id of the last stream entry whose learning is in the parameters."""
    return f"bd:{{{experiment}}}:applied"


def generation(experiment: str) -> str:
    """Counter bumped by every save of the experiment's parameters: "did anything change?"."""
    return f"bd:{{{experiment}}}:generation"


def learning_settings(experiment: str) -> str:
    """Hash of config version to the learning settings it fixes (app/learning_settings.py)."""
    return f"bd:{{{experiment}}}:learning"


def models_saved() -> str:
    """Pub/sub channel on which the worker names each experiment whose parameters it saved."""
    return "bd:models:saved"


def owner(experiment: str) -> str:
    """Lease naming the worker that processes the experiment's stream."""
    return f"bd:{{{experiment}}}:owner"


def deadletters(experiment: str) -> str:
    """Stream of the entries the worker could not decode, learn or log, with their errors."""
    return f"bd:{{{experiment}}}:deadletters"


def deadlettered(experiment: str) -> str:
    """Counter of every entry ever moved to the dead letters (replays and drops do not lower it)."""
    return f"bd:{{{experiment}}}:deadlettered"


def dead_decisions(experiment: str) -> str:
    """Sorted set of dead-lettered decision ids, scored by when their rewards can no longer come.

    A reward of such a decision is dead-lettered too: the log cannot replay it without its decision.
    """
    return f"bd:{{{experiment}}}:dead_decisions"


def replicated(experiment: str) -> str:
    """A mark written and waited for, so the replicas hold the experiment's writes (app/cluster)."""
    return f"bd:{{{experiment}}}:replicated"


def experiments() -> str:
    """Set of every experiment whose stream a worker has processed (to find retired ones)."""
    return "bd:experiments"


def live_workers() -> str:
    """Sorted set of ``banditd worker`` holder names, scored by when each stops counting (ms)."""
    return "bd:workers"


def last_good_config() -> str:
    """Hash holding the text of the last experiments file a process accepted."""
    return "bd:config:last_good"
