"""The live model's current estimate of each arm, read from Redis without changing it.

Linear policies (``linucb``, ``lin_ts``, ``epsilon_greedy``) estimate a reward
per context, so the console shows the estimate at the average context of the
experiment's recent decisions: ``theta . x`` with the standard error
``sqrt(x^T A^-1 x)`` (scaled by ``v`` for ``lin_ts``, its posterior's scale).
``beta_ts`` shows each arm's posterior mean success rate ``Beta(1 + s, 1 + f)``
and its standard deviation, mapped back onto the reward range. ``random`` has
no model, and a model over item features (shared or hybrid) no estimate of an
arm by itself: it scores an item from the item's features.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import sqlalchemy
from sqlalchemy.engine import Connection

from app.config import Experiment
from app.model_store import ModelStore

RECENT_DECISIONS = 1000  # contexts averaged for a linear model's estimate
LINEAR = frozenset({"linucb", "lin_ts", "epsilon_greedy"})

RECENT_FEATURES = sqlalchemy.text("""
    SELECT features FROM decisions
    WHERE experiment = :experiment AND model_id = :model_id
    ORDER BY decided_at DESC
    LIMIT :limit
""")


def average_context(conn: Connection, experiment: Experiment) -> np.ndarray | None:
    """Mean encoded context of the experiment's last decisions under its model; None if none."""
    rows = conn.execute(
        RECENT_FEATURES,
        {"experiment": experiment.name, "model_id": experiment.model_id, "limit": RECENT_DECISIONS},
    ).all()
    dim = experiment.features.dim
    found = [r.features for r in rows if r.features is not None and len(r.features) == dim]
    return np.asarray(found, dtype=np.float64).mean(axis=0) if found else None


def arm_estimates(
    store: ModelStore, experiment: Experiment, arms: list[str], x: np.ndarray | None
) -> dict[str, dict[str, Any]]:
    """Per arm: the model's ``estimate``, its ``uncertainty`` and the rewards it ``learned`` from.

    Arms the model never learned from are left out; so is everything for a
    ``random`` policy or, for a linear policy, when no context is known yet.
    """
    if experiment.policy not in LINEAR | {"beta_ts"} or experiment.item_model:
        return {}  # an item model's estimate is per item, from its features: no arm's own
    if experiment.policy in LINEAR and x is None:
        return {}
    found = store.load_scoring(experiment.name, experiment.model_id, arms, experiment.features.dim)
    low, high = experiment.reward.min, experiment.reward.max
    estimates = {}
    for arm, p in found.items():
        if experiment.policy == "beta_ts":
            a, b = 1.0 + p.successes, 1.0 + p.failures
            mean = a / (a + b)
            sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
            estimate, uncertainty = low + (high - low) * mean, (high - low) * sd
        else:
            estimate = float(p.theta @ x)
            uncertainty = math.sqrt(max(float(x @ p.A_inv @ x), 0.0))
            if experiment.policy == "lin_ts":
                uncertainty *= experiment.params.v
        estimates[arm] = {"estimate": estimate, "uncertainty": uncertainty, "learned": p.n}
    return estimates
