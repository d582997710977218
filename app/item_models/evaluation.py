"""``banditd evaluate`` for a model over item features: a target scored on the logged candidates.

A decision of an item model logs every candidate's encoded item features
(``decisions.candidate_items``), so a target policy can be scored on exactly
the candidates the logging policy had: the target's model gives each
candidate its moments (:func:`bandits.item_models.shared_moments` or the
hybrid ones), :func:`bandits.item_models.item_target_probabilities` turns
them into the target's slot-0 probabilities, and the logged candidate's
probability weighs its reward. The doubly robust estimate uses the target
model's own predictions as its reward model.

The target's model (``--params``): ``log`` replays the log up to the window's
start exactly as a rebuild does (:func:`app.rebuild.replay`); ``live`` reads
the live model from Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import sqlalchemy
from sqlalchemy.engine import Connection, Engine

from app.config import HYBRID, SHARED_ARM, Experiment
from app.evaluation_log import SETTLED_TOP_SLOT, window_rows
from bandits import LearningState, ScoringState, arm_prior
from bandits.item_models import (
    hybrid_scoring_moments,
    item_target_probabilities,
    shared_item_moments,
)
from bandits.ope import BanditLog, evaluate, importance_weights

WINDOW_SQL = sqlalchemy.text("""
    SELECT d.features, d.candidates, d.candidate_items, i.arm, i.propensity,
           i.propensity_estimated, i.reward, i.config_version
    FROM impression_rewards i
    JOIN decisions d ON d.decision_id = i.decision_id
    WHERE i.experiment = :experiment AND d.experiment = :experiment
      AND d.model_id = :model_id AND i.position = 0 AND i.reward_kind IS NOT NULL
      AND d.candidate_items IS NOT NULL
      AND d.decided_at >= :since AND (CAST(:until AS timestamptz) IS NULL OR d.decided_at < :until)
    ORDER BY d.decided_at, d.decision_id
""")


# The newest settled decisions, each decision's top-slot outcome by index probes.
SAMPLE_SQL = sqlalchemy.text(
    """
    SELECT d.features, d.candidates, d.candidate_items, i.arm, i.propensity,
           i.propensity_estimated, i.reward, i.config_version
    FROM decisions d
"""
    + SETTLED_TOP_SLOT
    + """
    WHERE d.experiment = :experiment AND d.model_id = :model_id
      AND d.candidate_items IS NOT NULL
    ORDER BY d.decided_at DESC
    LIMIT :limit
"""
)


@dataclass(frozen=True)
class ItemWindow:
    """The window's slot-0 decisions, each with its candidates' item features."""

    features: np.ndarray  # (n, d)
    candidates: list[list[str]]
    items: list[np.ndarray]  # per decision, (C, q)
    arms: np.ndarray  # (n,) the logged candidate's position
    propensities: np.ndarray
    estimated: np.ndarray
    rewards: np.ndarray
    config_versions: list[str]


@dataclass
class ItemModel:
    """An item model's parameters as one target scores with: the shared row and arms' own."""

    shared: LearningState
    arms: dict[str, LearningState]
    extras: dict[str, np.ndarray]  # hybrid arms' B

    @property
    def learned(self) -> int:
        """Rewards the model has learned."""
        return int(self.shared.n[0])


def read_item_window(
    engine: Engine, experiment: Experiment, since: datetime, until: datetime | None
) -> ItemWindow:
    """Slot-0 impressions with settled rewards of decisions in ``[since, until)``."""
    return _window(window_rows(engine, WINDOW_SQL, experiment, since, until), experiment)


def read_item_sample(conn: Connection, experiment: Experiment, size: int) -> ItemWindow:
    """The newest ``size`` settled slot-0 decisions of the experiment's current model."""
    params = {"experiment": experiment.name, "model_id": experiment.model_id, "limit": size}
    return _window(conn.execute(SAMPLE_SQL, params).all(), experiment)


def _window(rows, experiment: Experiment) -> ItemWindow:
    q = experiment.item_features.dim
    candidates = [list(r.candidates or experiment.arms) for r in rows]
    return ItemWindow(
        features=np.array([r.features for r in rows], dtype=np.float64).reshape(
            len(rows), experiment.features.dim
        ),
        candidates=candidates,
        items=[np.asarray(r.candidate_items, dtype=np.float64).reshape(-1, q) for r in rows],
        arms=np.array([c.index(r.arm) for c, r in zip(candidates, rows)], dtype=np.intp),
        propensities=np.array([r.propensity for r in rows], dtype=np.float64),
        estimated=np.array([r.propensity_estimated for r in rows], dtype=bool),
        rewards=np.array([r.reward for r in rows], dtype=np.float64),
        config_versions=sorted({r.config_version for r in rows}),
    )


def model_from_arms(
    experiment: Experiment,
    arms: dict[tuple[str, str], LearningState],
    extras: dict[tuple[str, str], np.ndarray],
) -> ItemModel:
    """The experiment's current model among ``(model_id, arm)``-keyed states (prior if absent)."""
    mine = {a: s for (m, a), s in arms.items() if m == experiment.model_id}
    shared = mine.pop(SHARED_ARM, None)
    if shared is None:
        shared = arm_prior(experiment.layout.dim, experiment.ridge)
    own = {a: e for (m, a), e in extras.items() if m == experiment.model_id}
    return ItemModel(shared, mine, own)


def estimate_items(
    window: ItemWindow,
    target: Experiment,
    model: ItemModel,
    *,
    level: float,
    seed: int,
    exact: bool = False,
) -> tuple[list[dict[str, float | str]], dict[str, float]]:
    """IPS, SNIPS and DR estimates of ``target`` choosing among each decision's candidates."""
    rng = np.random.default_rng(seed)
    n = len(window.candidates)
    width = max((len(c) for c in window.candidates), default=1)
    probs = np.zeros((n, width))
    predicted = np.zeros((n, width))
    for row in range(n):
        mean, quad = _moments(target, model, window.features[row], window, row)
        c = mean.size
        probs[row, :c] = item_target_probabilities(
            target.policy, mean, quad, target.params, rng, learned=model.learned, exact=exact
        )
        predicted[row, :c] = mean
    log = BanditLog(window.features, window.arms, window.propensities, window.rewards)
    w = importance_weights(log, probs)
    se = float(w.std(ddof=1) / np.sqrt(w.size)) if w.size > 1 else float("nan")
    weights = {"mean": float(w.mean()), "se": se}
    return [vars(e) for e in evaluate(log, probs, predicted, level=level)], weights


def _moments(
    target: Experiment, model: ItemModel, x: np.ndarray, window: ItemWindow, row: int
) -> tuple[np.ndarray, np.ndarray]:
    shared = _scoring([model.shared])
    if target.model != HYBRID:  # as /choose computes them
        return shared_item_moments(shared, target.layout, x, window.items[row])
    phi = target.layout.features(x, window.items[row])
    d, dim = target.features.dim, target.layout.dim
    ids = window.candidates[row]
    own = [model.arms.get(a) or arm_prior(d, target.ridge) for a in ids]
    B = np.stack([model.extras.get(a, np.zeros((d, dim))) for a in ids])
    return hybrid_scoring_moments(shared, _scoring(own), B, x, phi)


def _scoring(states: list[LearningState]) -> ScoringState:
    """One-arm learning states stacked as what choosing reads."""
    return ScoringState(
        A_inv=np.concatenate([s.A_inv for s in states]),
        theta=np.concatenate([s.theta for s in states]),
        n=np.concatenate([s.n for s in states]),
        successes=np.concatenate([s.successes for s in states]),
        failures=np.concatenate([s.failures for s in states]),
    )
