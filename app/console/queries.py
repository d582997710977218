"""What the console reads from the analysts' views, one experiment and one period at a time.

Every figure comes from ``experiment_daily``, ``lift_daily``, ``arm_daily``
(and ``daily_cells``, the materialised cells they sum, for the squared rewards
an arm's interval needs) and ``config_history`` (migration 0004,
docs/ANALYSTS.md), so the page and an analyst's SQL cannot disagree. Each
query touches one experiment's cells of the period (a few hundred rows at
most), whatever the size of the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import sqlalchemy
from sqlalchemy.engine import Connection

Z95 = 1.96  # the views' 95% normal quantile (migration 0004 rounds it so)
MAX_CONFIG_VERSIONS = 200  # newest first; a page shows no more markers than this

GROUPS = sqlalchemy.text("""
    SELECT holdout, sum(decisions)::bigint AS decisions, sum(impressions)::bigint AS impressions,
           sum(rewarded)::bigint AS rewarded, sum(reward_sum) AS reward_sum,
           sum(reward_sumsq) AS reward_sumsq
    FROM experiment_daily
    WHERE experiment = :experiment AND day >= :since AND day < :until
    GROUP BY holdout
""")
EXPERIMENT_DAYS = sqlalchemy.text("""
    SELECT day, holdout, decisions, impressions, rewarded, mean_reward, ci_low, ci_high
    FROM experiment_daily
    WHERE experiment = :experiment AND day >= :since AND day < :until
    ORDER BY day, holdout
""")
LIFT_DAYS = sqlalchemy.text("""
    SELECT day, policy_mean, holdout_mean, lift, ci_low, ci_high, lift_relative
    FROM lift_daily
    WHERE experiment = :experiment AND day >= :since AND day < :until
    ORDER BY day
""")
ARM_SHARES = sqlalchemy.text("""
    SELECT day, arm, top_impressions
    FROM arm_daily
    WHERE experiment = :experiment AND day >= :since AND day < :until AND NOT holdout
    ORDER BY day, arm
""")
ARM_TOTALS = sqlalchemy.text("""
    SELECT arm, holdout, sum(impressions)::bigint AS impressions, sum(rewarded)::bigint AS rewarded,
           sum(reward_sum) AS reward_sum, sum(reward_sumsq) AS reward_sumsq
    FROM daily_cells
    WHERE experiment = :experiment AND day >= :since AND day < :until
    GROUP BY arm, holdout
    ORDER BY arm, holdout
""")
CONFIG_VERSIONS = sqlalchemy.text("""
    SELECT config_version, previous_version, in_force_from, in_force_until, settings, changed
    FROM config_history
    WHERE experiment = :experiment
    ORDER BY in_force_from DESC, config_version DESC
    LIMIT :limit
""")


@dataclass(frozen=True)
class Period:
    """The UTC days ``since`` up to, not including, ``until``; ``today`` is the last one."""

    since: date
    until: date
    today: date

    def params(self, experiment: str) -> dict[str, Any]:
        """The bind parameters of the queries here."""
        return {"experiment": experiment, "since": self.since, "until": self.until}


def mean_interval(n: int, total: float, total_sq: float) -> dict[str, Any]:
    """Mean reward of ``n`` final rewards with its 95% normal interval, as the views compute it.

    ``total`` and ``total_sq`` are the sum of the rewards and of their squares;
    the interval is ``None`` below two rewards.
    """
    if not n:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "sd": None}
    mean = total / n
    if n < 2:
        return {"n": n, "mean": mean, "ci_low": None, "ci_high": None, "sd": None}
    sd = math.sqrt(max((total_sq - total * total / n) / (n - 1), 0.0))
    half = Z95 * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd}


def lift_of(policy: dict[str, Any], holdout: dict[str, Any]) -> dict[str, Any]:
    """Policy minus holdout mean with its 95% interval, the formula of ``lift_daily``."""
    if policy["mean"] is None or holdout["mean"] is None:
        return {"lift": None, "ci_low": None, "ci_high": None, "lift_relative": None}
    lift = policy["mean"] - holdout["mean"]
    low = high = None
    if policy["sd"] is not None and holdout["sd"] is not None:
        half = Z95 * math.sqrt(policy["sd"] ** 2 / policy["n"] + holdout["sd"] ** 2 / holdout["n"])
        low, high = lift - half, lift + half
    relative = lift / holdout["mean"] if holdout["mean"] else None
    return {"lift": lift, "ci_low": low, "ci_high": high, "lift_relative": relative}


def period_groups(conn: Connection, experiment: str, period: Period) -> dict[str, Any]:
    """Decisions and top-slot reward of the bandit and the holdout over the period, and the lift.

    Sums of ``experiment_daily`` over the period's days.
    """
    found = {}
    for r in conn.execute(GROUPS, period.params(experiment)):
        stats = mean_interval(int(r.rewarded), float(r.reward_sum), float(r.reward_sumsq))
        name = "holdout" if r.holdout else "policy"
        found[name] = {
            "decisions": int(r.decisions),
            "impressions": int(r.impressions),
            "rewarded": int(r.rewarded),
            **{k: v for k, v in stats.items() if k not in ("n", "sd")},
            "_stats": stats,
        }
    empty = {"decisions": 0, "impressions": 0, "rewarded": 0, "mean": None}
    policy = found.get("policy", {**empty, "_stats": mean_interval(0, 0.0, 0.0)})
    holdout = found.get("holdout", {**empty, "_stats": mean_interval(0, 0.0, 0.0)})
    lift = lift_of(policy.pop("_stats"), holdout.pop("_stats"))
    return {"policy": policy, "holdout": holdout, "lift": lift}


def daily_series(conn: Connection, experiment: str, period: Period) -> dict[str, Any]:
    """Per day of the period: each group's mean reward with its interval, the lift, arm shares.

    Column arrays, one entry per day (``None`` where a view has no value);
    ``shares`` holds, per arm, its share of the bandit's top-slot impressions
    that day (where exploration goes; the holdout is left out).
    """
    params = period.params(experiment)
    days = [period.since + timedelta(days=i) for i in range((period.until - period.since).days)]
    index = {d: i for i, d in enumerate(days)}
    fields = ("decisions", "impressions", "rewarded", "mean_reward", "ci_low", "ci_high")
    groups = {g: {f: [None] * len(days) for f in fields} for g in ("policy", "holdout")}
    for r in conn.execute(EXPERIMENT_DAYS, params):
        column = groups["holdout" if r.holdout else "policy"]
        for f in fields:
            value = getattr(r, f)
            cast = float if f in ("mean_reward", "ci_low", "ci_high") else int
            column[f][index[r.day]] = None if value is None else cast(value)
    lift_fields = ("lift", "ci_low", "ci_high", "lift_relative")
    lift = {f: [None] * len(days) for f in lift_fields}
    for r in conn.execute(LIFT_DAYS, params):
        for f in lift_fields:
            value = getattr(r, f)
            lift[f][index[r.day]] = None if value is None else float(value)
    counts: dict[str, list[int]] = {}
    for r in conn.execute(ARM_SHARES, params):
        counts.setdefault(r.arm, [0] * len(days))[index[r.day]] = int(r.top_impressions)
    totals = [sum(c[i] for c in counts.values()) for i in range(len(days))]
    shares = {
        arm: [c[i] / totals[i] if totals[i] else None for i in range(len(days))]
        for arm, c in sorted(counts.items())
    }
    return {
        "days": [d.isoformat() for d in days],
        "policy": groups["policy"],
        "holdout": groups["holdout"],
        "lift": lift,
        "shares": shares,
        "top_impressions": {arm: c for arm, c in sorted(counts.items())},
    }


def arm_totals(conn: Connection, experiment: str, period: Period) -> dict[str, dict[str, Any]]:
    """Per arm and group (``policy``, ``holdout``): impressions and mean reward with its interval.

    Over every slot, as ``arm_daily`` counts; the interval needs the squared
    rewards, read from ``daily_cells``, the cells ``arm_daily`` sums.
    """
    found: dict[str, dict[str, Any]] = {}
    for r in conn.execute(ARM_TOTALS, period.params(experiment)):
        stats = mean_interval(int(r.rewarded), float(r.reward_sum), float(r.reward_sumsq))
        found.setdefault(r.arm, {})["holdout" if r.holdout else "policy"] = {
            "impressions": int(r.impressions),
            "rewarded": int(r.rewarded),
            "mean": stats["mean"],
            "ci_low": stats["ci_low"],
            "ci_high": stats["ci_high"],
        }
    return found


def config_versions(conn: Connection, experiment: str) -> list[dict[str, Any]]:
    """The experiment's config versions, oldest first, with their time in force and changes.

    At most :data:`MAX_CONFIG_VERSIONS`, the newest.
    """
    rows = conn.execute(
        CONFIG_VERSIONS, {"experiment": experiment, "limit": MAX_CONFIG_VERSIONS}
    ).all()
    return [
        {
            "config_version": r.config_version,
            "previous_version": r.previous_version,
            "in_force_from": r.in_force_from.isoformat(),
            "in_force_until": r.in_force_until.isoformat() if r.in_force_until else None,
            "settings": _json_numbers(r.settings),
            "changed": _json_numbers(r.changed or {}),
        }
        for r in reversed(rows)
    ]


def _json_numbers(value: Any) -> Any:
    """``value`` with integers beyond 64 bits as floats: jsonb gives back 1e308 as an integer
    of 309 digits, which no JSON encoder of ours writes (a version of an earlier release
    may hold one)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return float(value)
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    return value
