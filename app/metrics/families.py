"""The API's metric families: names, help, labels and buckets, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.metrics.deferred import DeferredObservations

UNKNOWN = "unknown"  # the experiment label of a name that is not in the config

# /choose answers in milliseconds; a slow one (Redis trouble, a huge slate) takes seconds.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0)


@dataclass(frozen=True)
class ApiFamilies:
    """Every metric an API process writes. One set per app, on its own registry.

    In multiprocess mode the registry is unused for exposition (``/metrics``
    reads every process's files); it only keeps two apps in one process (tests)
    from colliding in the global one.
    """

    registry: CollectorRegistry
    decisions: Counter
    rewards: Counter
    duration: Histogram
    errors: Counter
    responses: Counter
    model_checked: Gauge
    redis_seconds: Histogram
    propensity_min: Gauge
    config_rejected: Gauge
    # the request path's histogram observations, written once a second
    deferred: DeferredObservations = field(default_factory=DeferredObservations)

    @classmethod
    def create(cls) -> "ApiFamilies":
        """A fresh set of the API's metric families on a registry of their own."""
        r = CollectorRegistry(auto_describe=True)
        return cls(
            registry=r,
            decisions=Counter(
                "banditd_decisions", "Decisions answered 200.", ["experiment"], registry=r
            ),
            rewards=Counter(
                "banditd_rewards", "Rewards answered 202 accepted.", ["experiment"], registry=r
            ),
            duration=Histogram(
                "banditd_request_duration_seconds",
                "Time from the request reaching the app to its answer, per route.",
                ["route"],
                buckets=DURATION_BUCKETS,
                registry=r,
            ),
            errors=Counter(
                "banditd_errors",
                "Error answers by route and error.code.",
                ["route", "code"],
                registry=r,
            ),
            responses=Counter(
                "banditd_responses",
                "Answers by route and HTTP status.",
                ["route", "status"],
                registry=r,
            ),
            model_checked=Gauge(
                "banditd_model_checked_timestamp_seconds",
                "When this API process last confirmed its cached parameters match the saved"
                " model (read the save counter); time() minus it is the model's age.",
                ["experiment"],
                multiprocess_mode="liveall",
                registry=r,
            ),
            redis_seconds=Histogram(
                "banditd_redis_roundtrip_seconds",
                "Round trip of the API's model check (one Redis GET) as the process sees it:"
                " under gevent it includes waiting for the process's other requests.",
                buckets=REDIS_BUCKETS,
                registry=r,
            ),
            propensity_min=Gauge(
                "banditd_propensity_min",
                "Smallest propensity this process showed for the experiment over its last"
                " one to two minutes of decisions.",
                ["experiment"],
                multiprocess_mode="livemin",
                registry=r,
            ),
            config_rejected=Gauge(
                "banditd_config_rejected",
                "1 while this process's last look at the experiments file found it invalid"
                " (the last good config serves).",
                multiprocess_mode="livemax",
                registry=r,
            ),
        )
