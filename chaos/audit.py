"""Compare the Postgres log with what the service acknowledged, as sets, and run rebuild --verify.

The promise under test: every acknowledged event is in Postgres exactly once.

- every ``200 /choose``: its ``decisions`` row and one ``impressions`` row per shown arm;
- every ``202 /reward`` (``accepted``): one ``explicit`` reward with that value;
- every ``409 reward_window_closed``: one ``late`` reward;
- every impression without an explicit reward: exactly one ``default`` reward.

Requests that got no usable answer (a 5xx, a broken connection) may or may not
have been recorded; a row for one of them is "unacknowledged", neither lost nor
duplicated, but there may be at most as many such decisions as unanswered
requests, and an explicit reward only with the value sent. Everything else in
the log is a duplicate (e.g. an explicit and a default reward for the same
impression) or unexplained.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import redis
import sqlalchemy
from sqlalchemy.engine import Engine

from app import keys
from app.event_stream import GROUP
from app.live_model import read_live, scan_model_ids
from chaos.load import Ledger

REPO = Path(__file__).resolve().parent.parent
MAX_DIFFERENCE = re.compile(r"max difference (\S+) ")


@dataclass
class Audit:
    """The log against the ledger; every list holds examples, every count is exact."""

    rows: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    duplicated: dict[str, int] = field(default_factory=dict)
    unexplained: dict[str, int] = field(default_factory=dict)
    unacknowledged: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def lost_total(self) -> int:
        """Acknowledged events missing from the log."""
        return sum(self.lost.values())

    @property
    def duplicated_total(self) -> int:
        """Rows beyond one per acknowledged event (or the unexplained)."""
        return sum(self.duplicated.values()) + sum(self.unexplained.values())

    @property
    def exact(self) -> bool:
        """True if the log holds every acknowledged event exactly once."""
        return self.lost_total == 0 and self.duplicated_total == 0

    def as_dict(self) -> dict:
        """For the JSON report."""
        out = asdict(self)
        out.update(lost_total=self.lost_total, duplicated_total=self.duplicated_total)
        return out


def _query(engine: Engine, sql: str, **params) -> list:
    with engine.connect() as conn:
        return conn.execute(sqlalchemy.text(sql), params).all()


def audit(engine: Engine, experiment: str, ledger: Ledger) -> Audit:
    """Compare the log of ``experiment`` with ``ledger``."""
    with ledger.lock:
        decisions = dict(ledger.decisions)
        explicit = dict(ledger.explicit)
        late = dict(ledger.late)
        maybe_rewards = dict(ledger.maybe_rewards)
        maybe_decisions = ledger.maybe_decisions
    result = Audit()

    logged_decisions = {
        r.decision_id
        for r in _query(
            engine, "SELECT decision_id FROM decisions WHERE experiment = :e", e=experiment
        )
    }
    impressions = {
        (r.decision_id, r.arm, r.position)
        for r in _query(
            engine, "SELECT decision_id, arm, position FROM impressions WHERE experiment = :e",
            e=experiment,
        )
    }  # fmt: skip
    rewards: dict[str, dict[tuple[str, str], float]] = {"explicit": {}, "default": {}, "late": {}}
    for r in _query(
        engine, "SELECT decision_id, arm, kind, reward FROM rewards WHERE experiment = :e",
        e=experiment,
    ):  # fmt: skip
        rewards[r.kind][(r.decision_id, r.arm)] = r.reward
    result.rows = {
        "decisions": len(logged_decisions),
        "impressions": len(impressions),
        **{f"rewards_{kind}": len(v) for kind, v in rewards.items()},
    }

    def note(bucket: dict[str, int], what: str, items) -> None:
        items = list(items)
        if items:
            bucket[what] = bucket.get(what, 0) + len(items)
            result.examples.extend(f"{what}: {i}" for i in items[:3])

    # decisions and impressions
    note(result.lost, "decisions", sorted(set(decisions) - logged_decisions))
    extra = logged_decisions - set(decisions)
    if len(extra) > maybe_decisions:
        note(result.unexplained, "decisions", sorted(extra)[: len(extra) - maybe_decisions])
    if extra:
        result.unacknowledged["decisions"] = min(len(extra), maybe_decisions)
    expected_impressions = {(d, arm, pos) for d, shown in decisions.items() for arm, pos in shown}
    note(result.lost, "impressions", sorted(expected_impressions - impressions))
    note(
        result.unexplained,
        "impressions",
        sorted(i for i in impressions - expected_impressions if i[0] not in extra),
    )

    # explicit rewards: each acknowledged one once, with its value; others only if unanswered
    logged_explicit = rewards["explicit"]
    note(result.lost, "explicit rewards", sorted(set(explicit) - set(logged_explicit)))
    note(
        result.unexplained,
        "explicit rewards with another value",
        sorted(k for k, v in explicit.items() if k in logged_explicit and logged_explicit[k] != v),
    )
    unasked = {k: v for k, v in logged_explicit.items() if k not in explicit}
    note(
        result.unexplained,
        "explicit rewards never acknowledged nor unanswered",
        sorted(k for k, v in unasked.items() if maybe_rewards.get(k) != v),
    )
    if unasked:
        result.unacknowledged["explicit rewards"] = len(unasked)

    # late rewards: each 409 window-closed once
    note(result.lost, "late rewards", sorted(set(late) - set(rewards["late"])))
    note(
        result.unexplained,
        "late rewards",
        sorted(k for k in rewards["late"] if k not in late and k not in maybe_rewards),
    )

    # default rewards: exactly the logged impressions without an explicit reward
    shown = {(d, arm) for d, arm, _ in impressions}
    want_default = shown - set(logged_explicit)
    note(result.lost, "default rewards", sorted(want_default - set(rewards["default"])))
    note(
        result.duplicated,
        "impressions with both an explicit and a default reward",
        sorted(set(rewards["default"]) & set(logged_explicit)),
    )
    note(
        result.unexplained,
        "rewards for no logged impression",
        sorted((set(rewards["default"]) | set(logged_explicit)) - shown),
    )
    return result


def live_arms(client: redis.Redis, experiment: str) -> dict[str, tuple[float, list[float]]]:
    """Each live arm's reward count and theta, keyed ``model/arm``."""
    live = read_live(client, experiment, scan_model_ids(client, experiment))
    return {
        f"{m}/{a}": (float(v.state.n[0]), v.state.theta[0].tolist())
        for (m, a), v in live.arms.items()
    }


def learned_total(client: redis.Redis, experiment: str) -> float:
    """How many rewards the live model of ``experiment`` has learned from (all models)."""
    models = scan_model_ids(client, experiment)
    return sum(float(arm.state.n[0]) for arm in read_live(client, experiment, models).arms.values())


def backlog(client: redis.Redis, experiment: str) -> dict:
    """Entries still in the stream, decisions whose window is still open, and the
    entries read but not acknowledged, per consumer."""
    left = {
        "stream": client.xlen(keys.stream(experiment)),
        "open_windows": client.zcard(keys.pending(experiment)),
    }
    try:
        info = client.xpending(keys.stream(experiment), GROUP)
    except redis.ResponseError:  # no stream or group (yet)
        return left
    left["read_not_acknowledged"] = {c["name"].decode(): c["pending"] for c in info["consumers"]}
    return left


def wait_for_log(
    engine: Engine,
    client: redis.Redis,
    experiment: str,
    ledger: Ledger,
    *,
    timeout: float,
) -> tuple[Audit, float, bool]:
    """Audit until nothing is lost and the Redis backlog is empty, or ``timeout`` passes.

    Returns the last audit, the seconds waited, and whether it settled in time.
    """
    started = time.monotonic()
    while True:
        result = audit(engine, experiment, ledger)
        left = backlog(client, experiment)
        if result.lost_total == 0 and not any(left.values()):
            return result, time.monotonic() - started, True
        if time.monotonic() - started > timeout:
            result.examples.append(f"backlog in Redis: {left}")
            return result, time.monotonic() - started, False
        time.sleep(0.25)


@dataclass
class Verify:
    """The outcome of ``banditd rebuild --experiment NAME --verify``."""

    command: str
    returncode: int
    max_difference: float | None
    output: str

    @property
    def ok(self) -> bool:
        """The live parameters equal the log replayed."""
        return self.returncode == 0


def rebuild(env: dict[str, str], experiment: str, *, verify: bool) -> Verify:
    """Run ``banditd rebuild`` (``--verify``: only compare) against the stores in ``env``."""
    args = [str(REPO / ".venv" / "bin" / "banditd"), "rebuild", "--experiment", experiment]
    if verify:
        args.append("--verify")
    done = subprocess.run(
        args, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    output = (done.stdout + done.stderr).strip()
    found = MAX_DIFFERENCE.search(output)
    return Verify(
        command=" ".join(["banditd", *args[1:]]),
        returncode=done.returncode,
        max_difference=float(found.group(1)) if found else None,
        output=output,
    )
