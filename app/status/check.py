"""Gather what ``banditd status`` reports, and judge whether something is wrong."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import redis
import sqlalchemy.exc

from app.services import Services
from app.status.log_state import LogState, read_log
from app.status.streams import StreamState, read_streams

# A backlog that grew across the sample only counts as growing once its oldest
# entry waits this long: under steady traffic a batch is always gathering.
GROWING_MIN_AGE_SECONDS = 5.0


@dataclass
class ExperimentStatus:
    """One experiment: its config version, stream, lease, model and log, and what is wrong."""

    experiment: str
    config_version: str
    lease_holder: str | None
    backlog: int
    backlog_change: int  # over the sample
    oldest_unlearned_age_seconds: float | None
    last_learned_age_seconds: float | None
    last_snapshot_at: str | None
    decisions_last_minute: int | None
    rewards_last_minute: int | None
    dead_letters: int
    problems: list[str] = field(default_factory=list)


@dataclass
class Status:
    """Every experiment's status, the config and Postgres checks, and the verdict."""

    config: str  # "ok" or why the file is rejected
    postgres: str  # "ok" or why it cannot be read
    experiments: list[ExperimentStatus]

    @property
    def problems(self) -> list[str]:
        """Everything wrong, one phrase each."""
        found = [] if self.config == "ok" else [f"config: {self.config}"]
        if self.postgres != "ok":
            found.append(f"postgres: {self.postgres}")
        for e in self.experiments:
            found.extend(f"{e.experiment}: {p}" for p in e.problems)
        return found

    def as_json(self) -> dict:
        """The status as a JSON-ready dict."""
        return {
            "ok": not self.problems,
            "problems": self.problems,
            "config": self.config,
            "postgres": self.postgres,
            "experiments": [asdict(e) for e in self.experiments],
        }


def gather(
    services: Services,
    *,
    sample_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Status:
    """Read the status of every configured experiment.

    The streams are read twice, ``sample_seconds`` apart, to see whether a
    backlog grows. Raises ``redis.RedisError`` when Redis cannot be read.
    """
    config = services.config.current()
    names = sorted(config.experiments)
    first = {s.experiment: s for s in read_streams(services.redis, names)}
    if sample_seconds > 0:
        sleep(sample_seconds)
    second = read_streams(services.redis, names)
    postgres = "ok"
    logged: dict[str, LogState] = {}
    try:
        logged = read_log(services.engine, names)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        postgres = f"unavailable: {type(exc).__name__}"
    max_lag = services.settings.ready_max_lag_seconds
    experiments = []
    for state in second:
        log = logged.get(state.experiment)
        status = ExperimentStatus(
            experiment=state.experiment,
            config_version=config.experiments[state.experiment].version,
            lease_holder=state.lease_holder,
            backlog=state.backlog,
            backlog_change=state.backlog - first[state.experiment].backlog,
            oldest_unlearned_age_seconds=_rounded(state.oldest_age_seconds),
            last_learned_age_seconds=_rounded(state.learned_age_seconds),
            last_snapshot_at=(
                log.last_snapshot_at.isoformat() if log and log.last_snapshot_at else None
            ),
            decisions_last_minute=log.decisions_last_minute if log else None,
            rewards_last_minute=log.rewards_last_minute if log else None,
            dead_letters=state.dead_letters,
        )
        status.problems = _problems(state, status.backlog_change, max_lag)
        experiments.append(status)
    rejected = services.config.last_error
    return Status(
        config="ok" if rejected is None else f"rejected, the last good config serves: {rejected}",
        postgres=postgres,
        experiments=experiments,
    )


def _problems(state: StreamState, backlog_change: int, max_lag: float) -> list[str]:
    found = []
    if state.lease_holder is None:
        found.append("no worker holds its lease")
    age = state.oldest_age_seconds or 0.0
    if age > max_lag:
        found.append(f"its oldest unlearned entry is {age:.0f} s old (over {max_lag:g} s)")
    elif backlog_change > 0 and age > GROWING_MIN_AGE_SECONDS:
        found.append(f"its backlog grows (+{backlog_change}; oldest entry {age:.0f} s old)")
    return found


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def render(status: Status) -> str:
    """The status as a table and a verdict, for a person."""
    lines = [
        f"config: {status.config}",
        f"postgres: {status.postgres}",
        "",
        f"{'experiment':<24} {'config':<12} {'lease holder':<24} {'backlog':>8} {'Δ':>6} "
        f"{'oldest':>8} {'learned':>9} {'dec/min':>8} {'rew/min':>8} {'dead':>5}  last snapshot",
    ]
    for e in status.experiments:
        lines.append(
            f"{e.experiment:<24} {e.config_version:<12} {e.lease_holder or '-':<24} "
            f"{e.backlog:>8} {e.backlog_change:>+6} {_age(e.oldest_unlearned_age_seconds):>8} "
            f"{_age(e.last_learned_age_seconds):>9} {_count(e.decisions_last_minute):>8} "
            f"{_count(e.rewards_last_minute):>8} {e.dead_letters:>5}  {e.last_snapshot_at or '-'}"
        )
    problems = status.problems
    lines.append("")
    lines.extend(f"PROBLEM {p}" for p in problems)
    lines.append("OK" if not problems else f"{len(problems)} problem(s)")
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def redis_unreachable(exc: redis.RedisError) -> dict:
    """The JSON status when Redis cannot be read."""
    return {"ok": False, "problems": [f"redis: unavailable: {exc}"], "experiments": []}
