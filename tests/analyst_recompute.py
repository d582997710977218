"""The analysts' views recomputed in Python from the raw rows of tests/analyst_log.py."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import timezone
from statistics import mean, stdev

from tests import analyst_log

Z = 1.96
FINAL = ("explicit", "default")


def outcomes_of(log: analyst_log.Log) -> list[dict]:
    """outcomes, recomputed: each impression with its decision and its final reward."""
    decisions = {d["decision_id"]: d for d in log.decisions}
    final = {(r["decision_id"], r["arm"]): r for r in log.rewards if r["kind"] in FINAL}
    out = []
    for i in log.impressions:
        d = decisions[i["decision_id"]]
        r = final.get((i["decision_id"], i["arm"]))
        out.append(
            {
                **i,
                "day": i["decided_at"].astimezone(timezone.utc).date(),
                "policy": d["policy"],
                "holdout": d["policy"] == "holdout",
                "unit_id": d["unit_id"],
                "context": d["context"],
                "candidates": d["candidates"],
                "reward": None if r is None else r["reward"],
                "reward_kind": None if r is None else r["kind"],
                "rewarded_at": None if r is None else r["received_at"],
            }
        )
    return out


def ci(values: list[float]) -> tuple[float | None, float | None, float | None, float | None]:
    """mean, sd, low, high as experiment_daily computes them (None where undefined)."""
    if not values:
        return None, None, None, None
    if len(values) < 2:
        return mean(values), None, None, None
    m, s = mean(values), stdev(values)
    half = Z * s / math.sqrt(len(values))
    return m, s, m - half, m + half


def top_rewards(outcomes: list[dict]) -> dict[tuple, list[float]]:
    """Final top-slot rewards grouped by (experiment, day, holdout)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for o in outcomes:
        if o["position"] == 0 and o["reward"] is not None:
            groups[(o["experiment"], o["day"], o["holdout"])].append(o["reward"])
    return groups


def settings_diff(old: dict, new: dict) -> dict:
    """config_history.changed, recomputed."""
    out = {}
    for key in sorted(set(old) | set(new)):
        o, n = old.get(key), new.get(key)
        if isinstance(o, dict) and isinstance(n, dict):
            for sub in sorted(set(o) | set(n)):
                if o.get(sub) != n.get(sub):
                    out[f"{key}.{sub}"] = {"old": o.get(sub), "new": n.get(sub)}
        elif o != n:
            out[key] = {"old": o, "new": n}
    return out


def approx(value, expected, tol=1e-9) -> bool:
    """Equal, with floats to ``tol`` (relative and absolute) and None only to None."""
    if expected is None or value is None:
        return value is expected
    if isinstance(expected, float) or isinstance(value, float):
        return math.isclose(float(value), float(expected), rel_tol=tol, abs_tol=tol)
    return value == expected


def assert_rows(actual: list[dict], expected: list[dict]) -> None:
    """The same rows in the same order, floats to 1e-9."""
    assert len(actual) == len(expected), (actual, expected)
    for a, e in zip(actual, expected):
        assert set(e) <= set(a), (a, e)
        for key, value in e.items():
            assert approx(a[key], value), (key, a, e)


def arm_daily_of(log: analyst_log.Log) -> list[dict]:
    """arm_daily, recomputed, in (experiment, day, arm, holdout) order."""
    cells: dict[tuple, list] = defaultdict(lambda: [0, 0, 0.0, 0])
    for o in outcomes_of(log):
        cell = cells[(o["experiment"], o["day"], o["arm"], o["holdout"])]
        cell[0] += 1
        cell[3] += o["position"] == 0
        if o["reward"] is not None:
            cell[1] += 1
            cell[2] += o["reward"]
    return [
        {
            "experiment": k[0],
            "day": k[1],
            "arm": k[2],
            "holdout": k[3],
            "impressions": c[0],
            "rewarded": c[1],
            "reward_sum": c[2],
            "mean_reward": c[2] / c[1] if c[1] else None,
            "top_impressions": c[3],
        }
        for k, c in sorted(cells.items())
    ]


def experiment_daily_of(log: analyst_log.Log) -> list[dict]:
    """experiment_daily, recomputed, in (experiment, day, holdout) order."""
    outcomes = outcomes_of(log)
    rewards = top_rewards(outcomes)
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for o in outcomes:
        c = counts[(o["experiment"], o["day"], o["holdout"])]
        c[0] += o["position"] == 0
        c[1] += 1
    expected = []
    for key in sorted(counts):
        m, s, low, high = ci(rewards.get(key, []))
        expected.append(
            {
                "experiment": key[0],
                "day": key[1],
                "holdout": key[2],
                "decisions": counts[key][0],
                "impressions": counts[key][1],
                "rewarded": len(rewards.get(key, [])),
                "mean_reward": m,
                "sd_reward": s,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return expected


def lift_daily_of(log: analyst_log.Log) -> list[dict]:
    """lift_daily, recomputed, in (experiment, day) order."""
    rewards = top_rewards(outcomes_of(log))
    expected = []
    for experiment, day in sorted({(e, d) for e, d, _ in rewards}):
        p = rewards.get((experiment, day, False), [])
        h = rewards.get((experiment, day, True), [])
        pm, ps, _, _ = ci(p)
        hm, hs, _, _ = ci(h)
        lift = None if pm is None or hm is None else pm - hm
        low = high = None
        if ps is not None and hs is not None:
            se = math.sqrt(ps**2 / len(p) + hs**2 / len(h))
            low, high = lift - Z * se, lift + Z * se
        expected.append(
            {
                "experiment": experiment,
                "day": day,
                "policy_mean": pm,
                "holdout_mean": hm,
                "lift": lift,
                "ci_low": low,
                "ci_high": high,
                "lift_relative": lift / hm if lift is not None and hm else None,
                "policy_n": len(p),
                "holdout_n": len(h),
            }
        )
    return expected
