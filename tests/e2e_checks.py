"""What the end-to-end test sent, and checks of the Postgres log against it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from tests.conftest import poll, rows


@dataclass
class Sent:
    """Everything the synthetic client sent and got back."""

    decisions: dict[str, dict] = field(default_factory=dict)  # decision_id -> /choose answer
    contexts: dict[str, dict] = field(default_factory=dict)  # decision_id -> context sent
    explicit: set[tuple[str, str, float]] = field(default_factory=set)
    unrewarded: set[tuple[str, str]] = field(default_factory=set)

    def shown(self) -> set[tuple[str, str]]:
        return {(d, a["arm"]) for d, ans in self.decisions.items() for a in ans["arms"]}


def log_mismatches(engine, experiment: str, sent: Sent, versions: dict[str, float]) -> list[str]:
    """What the Postgres log still lacks or has wrong; empty when it matches ``sent`` exactly.

    ``versions`` maps each config version decisions were made under to its alpha.
    """
    n = len(sent.decisions)
    counts = rows(
        engine,
        """
        SELECT (SELECT count(*) FROM decisions) AS decisions,
               (SELECT count(*) FROM impressions) AS impressions,
               (SELECT count(*) FROM rewards WHERE kind = 'explicit') AS explicit,
               (SELECT count(*) FROM rewards WHERE kind = 'default') AS defaults,
               (SELECT count(*) FROM rewards WHERE kind = 'late') AS late""",
    )[0]
    expected = {
        "decisions": n,
        "impressions": len(sent.shown()),
        "explicit": len(sent.explicit),
        "defaults": len(sent.unrewarded),
        "late": 0,
    }
    if counts != expected:
        return [f"row counts {counts}, expected {expected}"]

    problems = []
    decisions = {
        r["decision_id"]: r
        for r in rows(
            engine, "SELECT decision_id, context, config_version, model_id, policy FROM decisions"
        )
    }
    if set(decisions) != set(sent.decisions):
        problems.append("decision ids differ from the ones /choose returned")
    for did, d in decisions.items():
        answer = sent.decisions.get(did)
        if answer and (
            d["context"] != sent.contexts[did] or d["config_version"] != answer["config_version"]
        ):
            problems.append(f"decision {did}: {d} does not match what was sent/answered")
            break

    impressions = rows(
        engine,
        "SELECT decision_id, arm, position, score, propensity, config_version FROM impressions",
    )
    if {(i["decision_id"], i["arm"]) for i in impressions} != sent.shown():
        problems.append("(decision_id, arm) of impressions differ from the ones /choose returned")
    for i in impressions:
        shown = sent.decisions.get(i["decision_id"], {"arms": [{}]})["arms"][0]
        if not (0.0 < i["propensity"] <= 1.0):
            problems.append(f"propensity out of (0, 1]: {i}")
            break
        if (
            i["position"] != 0
            or not math.isclose(i["propensity"], shown.get("propensity", -1))
            or not math.isclose(i["score"], shown.get("score", math.nan))
        ):
            problems.append(f"impression {i} does not match the /choose answer {shown}")
            break

    explicit = {
        (r["decision_id"], r["arm"], r["reward"])
        for r in rows(
            engine, "SELECT decision_id, arm, reward FROM rewards WHERE kind = 'explicit'"
        )
    }
    if explicit != sent.explicit:
        problems.append(
            f"explicit rewards differ: {len(explicit - sent.explicit)} unexpected, "
            f"{len(sent.explicit - explicit)} missing"
        )
    defaults = rows(engine, "SELECT decision_id, arm, reward FROM rewards WHERE kind = 'default'")
    if {(r["decision_id"], r["arm"]) for r in defaults} != sent.unrewarded:
        problems.append("default rewards are not exactly the unrewarded impressions")
    if any(r["reward"] != 0.0 for r in defaults):
        problems.append("a default reward is not 0.0")

    view = rows(
        engine,
        """SELECT count(*) AS n, count(reward) AS rewarded,
                                  count(DISTINCT (decision_id, arm)) AS distinct_impressions
                           FROM impression_rewards WHERE experiment = :e""",
        e=experiment,
    )[0]
    if view != {"n": n, "rewarded": n, "distinct_impressions": n}:
        problems.append(
            f"impression_rewards: {view}, expected every one of {n} impressions "
            "exactly once with a reward"
        )

    logged = {
        r["config_version"]: r["settings"]
        for r in rows(
            engine,
            "SELECT config_version, settings FROM config_versions WHERE experiment = :e",
            e=experiment,
        )
    }
    if set(logged) != set(versions):
        problems.append(f"config_versions {sorted(logged)}, expected {sorted(versions)}")
    elif any(logged[v]["alpha"] != alpha for v, alpha in versions.items()):
        problems.append(f"config_versions settings do not carry the alphas {versions}")
    return problems


def table_counts(engine) -> dict[str, int]:
    counts = {}
    for table in ("decisions", "impressions", "rewards", "config_versions"):
        counts[table] = rows(engine, f"SELECT count(*) AS n FROM {table}")[0]["n"]
    for kind in ("explicit", "default", "late"):
        counts[f"rewards.{kind}"] = rows(
            engine, "SELECT count(*) AS n FROM rewards WHERE kind = :k", k=kind
        )[0]["n"]
    counts["impression_rewards"] = rows(engine, "SELECT count(*) AS n FROM impression_rewards")[0][
        "n"
    ]
    return counts


def wait_for(what: str, check: Callable[[], list[str]], timeout: float) -> float:
    """Poll ``check`` (a list of problems) until it is empty; returns the seconds it took."""
    started = time.monotonic()
    last: list[str] = []

    def ok() -> bool:
        last[:] = check()
        return not last

    try:
        poll(ok, timeout=timeout, interval=0.2)
    except pytest.fail.Exception:
        pytest.fail(f"{what} not reached within {timeout}s: " + "; ".join(last[:5]))
    return time.monotonic() - started
