"""A small, deterministic log for the analysts' views and docs/ANALYSTS.md, kept in Python too.

:func:`build` makes the rows (config versions, decisions, impressions, rewards)
from a seeded generator; :func:`write` puts them in Postgres. The tests
recompute every view's numbers from the same rows in Python.

- ``home_feed``: config ``hf_v1`` (arms a, b, c; window 900 s; holdout 0.2,
  random) from 2026-11-02, ``hf_v2`` (alpha 1.0 -> 0.5, a new arm d, window
  600 s) from 2026-11-03; 120 decisions a day; a holdout by unit (units u00 to
  u04) or per decision without a unit; some requests name their candidates;
  explicit rewards of 1 or 0.5, default 0, some late ones. Pending: three
  decisions made a minute ago (window open; one already rewarded) and one made
  on 2026-11-03 at 23:58 that never got its default (overdue).
- ``push_copy``: 2026-11-02, one bandit decision (n = 1: no interval) and three
  holdout decisions rewarded 0 (holdout mean 0: no relative lift).
- ``two_cats``: a config only, with two categorical features declared in an
  order jsonb does not keep.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy

from bandits.features import FeatureSpec

DAY1 = datetime(2026, 11, 2, tzinfo=timezone.utc)
DAY2 = datetime(2026, 11, 3, tzinfo=timezone.utc)
HOLDOUT_UNITS = {f"u{n:02d}" for n in range(5)}
CITIES = ("berlin", "hamburg", "paris")  # paris is not declared: encodes as all zeros


def home_feed_settings(alpha: float, arms: list[str], window: int) -> dict:
    """home_feed's settings at one version."""
    return {
        "policy": "linucb",
        "alpha": alpha,
        "epsilon": 0.0,
        "v": 1.0,
        "propensity_draws": 1000,
        "ridge": 1.0,
        "arms": arms,
        "max_arms": 1000,
        "position_weights": [],
        "forgetting": 1.0,
        "reward": {"default": 0.0, "window_seconds": window, "min": 0.0, "max": 1.0},
        "features": {
            "numeric": ["hour"],
            "categorical": {"city": ["berlin", "hamburg"]},
            "intercept": True,
        },
        "holdout": 0.2,
        "holdout_policy": "random",
    }


PUSH_COPY = {
    "policy": "beta_ts",
    "arms": ["short", "friendly"],
    "reward": {"default": 0.0, "window_seconds": 60, "min": 0.0, "max": 1.0},
    "features": {"numeric": [], "categorical": {}, "intercept": True},
    "holdout": 0.5,
    "holdout_policy": "random",
}
TWO_CATS = {
    "policy": "linucb",
    "arms": ["x", "y"],
    "reward": {"default": 0.0, "window_seconds": 60, "min": 0.0, "max": 1.0},
    "features": {
        "numeric": ["age", "hour"],
        "categorical": {"tier": ["gold", "silver"], "city": ["berlin", "rome"]},
        "intercept": False,
    },
}


@dataclass
class Log:
    """The rows of the log, as the tables hold them."""

    configs: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    impressions: list[dict] = field(default_factory=list)
    rewards: list[dict] = field(default_factory=list)

    def settings(self, experiment: str, version: str) -> dict:
        """The settings of a config version."""
        return next(
            c["settings"]
            for c in self.configs
            if (c["experiment"], c["config_version"]) == (experiment, version)
        )


def spec_of(settings: dict) -> FeatureSpec:
    """The feature spec a config declares (categorical features in the dict's order)."""
    f = settings["features"]
    return FeatureSpec.from_mapping(f["numeric"], f["categorical"], f["intercept"])


def build(now: datetime) -> Log:
    """The log; ``now`` places the decisions whose window is still open."""
    rng = np.random.default_rng(20261102)
    log = Log()
    versions = {
        "hf_v1": home_feed_settings(1.0, ["a", "b", "c"], 900),
        "hf_v2": home_feed_settings(0.5, ["a", "b", "c", "d"], 600),
    }
    log.configs += [
        {
            "experiment": "home_feed",
            "config_version": "hf_v1",
            "settings": versions["hf_v1"],
            "first_seen_at": DAY1,
        },
        {
            "experiment": "home_feed",
            "config_version": "hf_v2",
            "settings": versions["hf_v2"],
            "first_seen_at": DAY2,
        },
        {
            "experiment": "push_copy",
            "config_version": "pc_v1",
            "settings": PUSH_COPY,
            "first_seen_at": DAY1,
        },
        {
            "experiment": "two_cats",
            "config_version": "tc_v1",
            "settings": TWO_CATS,
            "first_seen_at": DAY1,
        },
    ]
    weight = {"a": 1.0, "b": 2.0, "c": 6.0, "d": 3.0}
    rate = {"a": 0.2, "b": 0.35, "c": 0.6, "d": 0.5}
    n = 0
    for day, version in ((DAY1, "hf_v1"), (DAY2, "hf_v2")):
        settings = versions[version]
        for i in range(120):
            at = day + timedelta(minutes=5 + 11 * i, seconds=int(rng.integers(0, 60)))
            outcome = "final"
            _decision(log, rng, n, at, version, settings, weight, rate, outcome)
            n += 1
    late_night = DAY2 + timedelta(hours=23, minutes=58)
    _decision(log, rng, n, late_night, "hf_v2", versions["hf_v2"], weight, rate, "pending")
    n += 1
    for j, outcome in enumerate(("pending", "pending", "explicit")):
        at = (now - timedelta(seconds=60 + j)).replace(microsecond=0)
        _decision(log, rng, n, at, "hf_v2", versions["hf_v2"], weight, rate, outcome)
        n += 1

    push_at = DAY1 + timedelta(hours=9)
    for j, (policy, value) in enumerate(
        (("beta_ts", 1.0), ("holdout", 0.0), ("holdout", 0.0), ("holdout", 0.0))
    ):
        decision_id = f"push_copy:{j}"
        at = push_at + timedelta(minutes=j)
        log.decisions.append(
            {
                "decision_id": decision_id,
                "experiment": "push_copy",
                "decided_at": at,
                "config_version": "pc_v1",
                "policy": policy,
                "model_id": "pcmodel",
                "request_id": None,
                "context": {},
                "features": [1.0],
                "shown_count": 1,
                "propensity_estimated": policy == "beta_ts",
                "candidates": None,
                "unit_id": f"p{j}",
            }
        )
        arm = "short" if j % 2 == 0 else "friendly"
        log.impressions.append(
            {
                "decision_id": decision_id,
                "experiment": "push_copy",
                "arm": arm,
                "position": 0,
                "score": 0.5,
                "propensity": 0.5,
                "propensity_estimated": policy == "beta_ts",
                "decided_at": at,
                "config_version": "pc_v1",
            }
        )
        _reward(log, decision_id, "push_copy", arm, value, "explicit", at + timedelta(seconds=5))
    return log


def _decision(log, rng, n, at, version, settings, weight, rate, outcome) -> None:
    decision_id = f"home_feed:{n:04d}"
    unit_id = None if n % 10 == 9 else f"u{int(rng.integers(0, 24)):02d}"
    holdout = unit_id in HOLDOUT_UNITS if unit_id else bool(rng.random() < 0.2)
    arms = settings["arms"]
    candidates = None
    if n % 7 == 3:
        candidates = ["a", "c"] if version == "hf_v1" else ["d", "a", "c"]
    pool = list(candidates or arms)
    k = 1 + int(rng.integers(0, 2))
    city = CITIES[int(rng.integers(0, 3))]
    context = {"hour": at.hour, "city": city}
    policy = "holdout" if holdout else "linucb"
    shown, props = [], []
    remaining = list(pool)
    for _ in range(k):
        w = np.array([1.0 if holdout else weight[a] for a in remaining])
        p = w / w.sum()
        pick = int(rng.choice(len(remaining), p=p))
        shown.append(remaining[pick])
        props.append(float(p[pick]))
        del remaining[pick]
    log.decisions.append(
        {
            "decision_id": decision_id,
            "experiment": "home_feed",
            "decided_at": at,
            "config_version": version,
            "policy": policy,
            "model_id": "hfmodel",
            "request_id": f"req-{n}" if n % 4 == 0 else None,
            "context": context,
            "features": spec_of(settings).encode(context).tolist(),
            "shown_count": k,
            "propensity_estimated": False,
            "candidates": candidates,
            "unit_id": unit_id,
        }
    )
    window = settings["reward"]["window_seconds"]
    for position, (arm, propensity) in enumerate(zip(shown, props)):
        log.impressions.append(
            {
                "decision_id": decision_id,
                "experiment": "home_feed",
                "arm": arm,
                "position": position,
                "score": round(float(rng.normal()), 6),
                "propensity": propensity,
                "propensity_estimated": False,
                "decided_at": at,
                "config_version": version,
            }
        )
        if outcome == "pending" or (outcome == "explicit" and position > 0):
            continue
        clicked = outcome == "explicit" or rng.random() < rate[arm] * (
            1.2 if city == "berlin" else 1.0
        )
        if clicked:
            value = 0.5 if rng.random() < 0.25 else 1.0
            delay = 30 if outcome == "explicit" else int(rng.integers(5, window - 5))
            _reward(
                log,
                decision_id,
                "home_feed",
                arm,
                value,
                "explicit",
                at + timedelta(seconds=delay, milliseconds=int(rng.integers(0, 1000))),
            )
        else:
            _reward(
                log,
                decision_id,
                "home_feed",
                arm,
                0.0,
                "default",
                at + timedelta(seconds=window + 1),
            )
            if rng.random() < 0.1:
                _reward(
                    log,
                    decision_id,
                    "home_feed",
                    arm,
                    1.0,
                    "late",
                    at + timedelta(seconds=window + int(rng.integers(10, 3600))),
                )


def _reward(log, decision_id, experiment, arm, value, kind, at) -> None:
    log.rewards.append(
        {
            "decision_id": decision_id,
            "experiment": experiment,
            "arm": arm,
            "reward": value,
            "kind": kind,
            "received_at": at,
            "stream_ms": int(at.timestamp() * 1000),
            "stream_seq": len(log.rewards),
        }
    )


def write(engine, log: Log) -> None:
    """Insert the log's rows (one transaction)."""
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO config_versions VALUES "
                "(:experiment, :config_version, CAST(:settings AS jsonb), :first_seen_at)"
            ),
            [{**c, "settings": json.dumps(c["settings"])} for c in log.configs],
        )
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO decisions (decision_id, experiment, decided_at, config_version, "
                "policy, model_id, request_id, context, features, shown_count, "
                "propensity_estimated, candidates, unit_id) VALUES (:decision_id, :experiment, "
                ":decided_at, :config_version, :policy, :model_id, :request_id, "
                "CAST(:context AS jsonb), CAST(:features AS float8[]), :shown_count, "
                ":propensity_estimated, CAST(:candidates AS text[]), :unit_id)"
            ),
            [{**d, "context": json.dumps(d["context"])} for d in log.decisions],
        )
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO impressions VALUES (:decision_id, :experiment, :arm, :position, "
                ":score, :propensity, :propensity_estimated, :decided_at, :config_version)"
            ),
            log.impressions,
        )
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO rewards VALUES (:decision_id, :experiment, :arm, :reward, :kind, "
                ":received_at, :stream_ms, :stream_seq)"
            ),
            log.rewards,
        )
