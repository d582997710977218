"""``banditd report``: what an experiment earned in a period, from the analysts' views.

Decisions, reward per arm, lift over the holdout with its 95% interval, and the
config changes of the period with the reward before and after each, all read
from the views of docs/ANALYSTS.md (``outcomes``, ``arm_daily``,
``experiment_daily``, ``config_history``), so the report and an analyst's SQL
cannot disagree. Rewards count once final (explicit or default); lift and the
before/after figures use the top slot, as ``lift_daily`` does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy
from sqlalchemy.engine import Engine

from app.settings import Settings

Z95 = 1.959963984540054

ARMS = """
SELECT arm, holdout, sum(impressions) AS impressions, sum(rewarded) AS rewarded,
       sum(reward_sum) AS reward_sum
FROM arm_daily
WHERE experiment = :experiment AND day >= :since AND day < :until
GROUP BY arm, holdout ORDER BY holdout, arm
"""
DECISIONS = """
SELECT holdout, sum(decisions) AS decisions, sum(impressions) AS impressions
FROM experiment_daily
WHERE experiment = :experiment AND day >= :since AND day < :until
GROUP BY holdout
"""
TOP_SLOT = """
SELECT {group} AS grp, count(*) AS n, avg(reward) AS mean, var_samp(reward) AS var
FROM outcomes
WHERE experiment = :experiment AND position = 0 AND reward IS NOT NULL
  AND decided_at >= :since AND decided_at < :until
GROUP BY {group}
"""
CHANGES = """
SELECT config_version, previous_version, in_force_from, changed
FROM config_history
WHERE experiment = :experiment AND in_force_from >= :since AND in_force_from < :until
  AND previous_version IS NOT NULL
ORDER BY in_force_from
"""


@dataclass
class Mean:
    """A mean reward with its 95% normal interval (None where it cannot be had)."""

    n: int
    mean: float | None
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass
class Lift:
    """The policy's mean top-slot reward minus the holdout's, with its 95% interval."""

    policy: Mean
    holdout: Mean
    lift: float | None
    ci_low: float | None
    ci_high: float | None
    lift_relative: float | None


@dataclass
class Report:
    """Everything ``banditd report`` shows."""

    experiment: str
    since: str
    until: str
    decisions: dict[str, int]
    impressions: dict[str, int]
    arms: list[dict[str, Any]]
    lift: Lift
    changes: list[dict[str, Any]] = field(default_factory=list)


def mean_of(n: int, mean: float | None, var: float | None) -> Mean:
    """A :class:`Mean` from a count, a mean and a sample variance."""
    if not n or mean is None:
        return Mean(0, None)
    if n < 2 or var is None:
        return Mean(n, float(mean))
    half = Z95 * math.sqrt(var / n)
    return Mean(n, float(mean), float(mean) - half, float(mean) + half)


def lift_of(policy: tuple, holdout: tuple) -> Lift:
    """Lift of the policy over the holdout from (n, mean, var) of each: Welch's normal interval."""
    p, h = mean_of(*policy), mean_of(*holdout)
    if p.mean is None or h.mean is None:
        return Lift(p, h, None, None, None, None)
    lift = p.mean - h.mean
    low = high = None
    if p.n >= 2 and h.n >= 2:
        half = Z95 * math.sqrt(policy[2] / p.n + holdout[2] / h.n)
        low, high = lift - half, lift + half
    relative = lift / h.mean if h.mean else None
    return Lift(p, h, lift, low, high, relative)


def build(engine: Engine, experiment: str, since: date, until: date) -> Report:
    """The report of ``experiment`` for the days ``since`` up to, not including, ``until``."""
    params = {"experiment": experiment, "since": since, "until": until}
    start = datetime.combine(since, datetime.min.time(), timezone.utc)
    end = datetime.combine(until, datetime.min.time(), timezone.utc)
    moments = {**params, "since": start, "until": end}
    with engine.connect() as conn:
        decisions = conn.execute(sqlalchemy.text(DECISIONS), params).all()
        arms = conn.execute(sqlalchemy.text(ARMS), params).all()
        groups = {
            r.grp: (r.n, r.mean, r.var)
            for r in conn.execute(sqlalchemy.text(TOP_SLOT.format(group="holdout")), moments)
        }
        versions = {
            r.grp: mean_of(r.n, r.mean, r.var)
            for r in conn.execute(
                sqlalchemy.text(TOP_SLOT.format(group="config_version") + " ORDER BY 1"),
                {**moments, "since": start - timedelta(days=3650)},
            )
        }
        changes = conn.execute(sqlalchemy.text(CHANGES), moments).all()
    group = {False: "policy", True: "holdout"}
    return Report(
        experiment=experiment,
        since=since.isoformat(),
        until=until.isoformat(),
        decisions={group[r.holdout]: int(r.decisions) for r in decisions},
        impressions={group[r.holdout]: int(r.impressions) for r in decisions},
        arms=[
            {
                "arm": r.arm,
                "group": group[r.holdout],
                "impressions": int(r.impressions),
                "rewarded": int(r.rewarded),
                "mean_reward": float(r.reward_sum) / int(r.rewarded) if r.rewarded else None,
            }
            for r in arms
        ],
        lift=lift_of(groups.get(False, (0, None, None)), groups.get(True, (0, None, None))),
        changes=[
            {
                "config_version": r.config_version,
                "in_force_from": r.in_force_from.isoformat(),
                "changed": r.changed,
                "reward_before": _version_mean(versions, r.previous_version),
                "reward_after": _version_mean(versions, r.config_version),
            }
            for r in changes
        ],
    )


def _version_mean(versions: dict[str, Mean], version: str | None) -> dict | None:
    return asdict(versions[version]) if version in versions else None


def markdown(report: Report) -> str:
    """The report as Markdown."""
    lines = [
        f"# {report.experiment}: {report.since} to {report.until} (exclusive)",
        "",
        f"Decisions: {report.decisions.get('policy', 0):,} by the bandit, "
        f"{report.decisions.get('holdout', 0):,} in the holdout "
        f"({report.impressions.get('policy', 0) + report.impressions.get('holdout', 0):,} "
        "impressions).",
        "",
        "## Lift over the holdout (top slot, final rewards, 95% interval)",
        "",
        "| group | n | mean reward | 95% interval |",
        "|---|---:|---:|---|",
    ]
    for name, m in (("bandit", report.lift.policy), ("holdout", report.lift.holdout)):
        lines.append(f"| {name} | {m.n:,} | {_f(m.mean)} | {_interval(m.ci_low, m.ci_high)} |")
    lift = report.lift
    lines += [
        "",
        f"Lift: **{_f(lift.lift)}** ({_interval(lift.ci_low, lift.ci_high)}), "
        f"relative {_pct(lift.lift_relative)}.",
        "",
        "## Reward per arm (final rewards, every slot)",
        "",
        "| arm | group | impressions | rewarded | mean reward |",
        "|---|---|---:|---:|---:|",
    ]
    shown = {"policy": "bandit", "holdout": "holdout"}
    lines += [
        f"| {a['arm']} | {shown[a['group']]} | {a['impressions']:,} | {a['rewarded']:,} | "
        f"{_f(a['mean_reward'])} |"
        for a in report.arms
    ]
    lines += ["", "## Config changes in the period", ""]
    if not report.changes:
        lines.append("None.")
    for c in report.changes:
        before, after = c["reward_before"], c["reward_after"]
        lines.append(
            f"- {c['in_force_from']}: version `{c['config_version']}` changed "
            f"`{json.dumps(c['changed'], sort_keys=True)}`; top-slot reward before "
            f"{_f(before and before['mean'])} (n {before['n'] if before else 0:,}), after "
            f"{_f(after and after['mean'])} (n {after['n'] if after else 0:,})"
        )
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1%}"


def _interval(low: float | None, high: float | None) -> str:
    return "–" if low is None else f"{low:.4f} to {high:.4f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``banditd report``'s options on ``parser``."""
    parser.add_argument("--experiment", required=True, help="the experiment to report on")
    parser.add_argument("--since", help="first day (YYYY-MM-DD, UTC); default: 30 days ago")
    parser.add_argument("--until", help="day after the last (YYYY-MM-DD); default: tomorrow")
    parser.add_argument("--format", choices=("md", "json"), default="md")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``banditd report``; returns the exit code (2: bad arguments, 1: nothing logged)."""
    from app.services import database_engine

    today = datetime.now(timezone.utc).date()
    try:
        until = date.fromisoformat(args.until) if args.until else today + timedelta(days=1)
        since = date.fromisoformat(args.since) if args.since else until - timedelta(days=31)
    except ValueError as exc:
        print(f"banditd report: {exc}", file=sys.stderr)
        return 2
    if until <= since:
        print(f"banditd report: --until {until} is not after --since {since}", file=sys.stderr)
        return 2
    engine = database_engine(settings.database_url)
    try:
        report = build(engine, args.experiment, since, until)
    finally:
        engine.dispose()
    if not report.decisions:
        print(f"banditd report: no decisions of {args.experiment} in the period", file=sys.stderr)
        return 1
    if args.format == "json":
        print(json.dumps(asdict(report), indent=2))
    else:
        print(markdown(report), end="")
    return 0
