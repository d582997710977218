"""Choose among candidates by their item features (the /choose side of an item model).

A shared model scores a candidate from its features alone: one state for
every item. A hybrid model adds the candidate's own per-arm part, so its
candidates are rows of an arm table (a dynamic catalogue grows one, bounded by
``max_arms`` as for a per-arm model) next to the one-row shared table.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from app.config import HYBRID, Experiment
from app.errors import ApiError
from app.model_cache import SHARED_PART, ArmTable, ModelCache
from bandits import FeatureError, ScoringState
from bandits.item_models import hybrid_scoring_moments, select_items, shared_item_moments
from bandits.policy import Selection


def encode_items(experiment: Experiment, items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The ``(C, q)`` encoded item features of the candidates, in order.

    A feature the item lacks encodes as for the context (0, or no category);
    400 ``invalid_feature`` naming the candidate if a value cannot be encoded.
    """
    spec = experiment.item_features
    try:
        return spec.encode_many(items)
    except FeatureError:
        pass  # find the candidate at fault
    for i, features in enumerate(items):
        try:
            spec.encode(features)
        except FeatureError as exc:
            field = exc.field.removeprefix("context")
            raise ApiError(
                400,
                "invalid_feature",
                f"candidate {i}: {exc.message}",
                f"candidates[{i}].features{field}",
            ) from exc
    raise AssertionError("encode_many failed on rows that encode one by one")


def choose_items(
    experiment: Experiment,
    cache: ModelCache,
    ids: Sequence[str],
    x: np.ndarray,
    items: np.ndarray,
    rng: np.random.Generator,
    k: int,
) -> Selection:
    """Rank ``k`` of the candidates ``ids`` (features: rows of ``items``) under the item model.

    The selection's ``arms`` are positions into the candidates.
    """
    if experiment.model == HYBRID:
        shared = cache.table(experiment, part=SHARED_PART).state
        mean, quad = _hybrid_moments(
            experiment, shared, cache.table(experiment, ids), ids, x, items
        )
    else:
        shared = cache.table(experiment).state  # row 0 is the shared model
        mean, quad = shared_item_moments(shared, experiment.layout, x, items)
    learned = float(shared.n[0])  # rewards learned: t of SquareCB's gamma
    return select_items(experiment.policy, mean, quad, rng, experiment.params, k=k, learned=learned)


def _hybrid_moments(
    experiment: Experiment,
    shared: ScoringState,
    table: ArmTable,
    ids: Sequence[str],
    x: np.ndarray,
    items: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The hybrid moments of the candidates: the paper's for arms that learned, and for the
    others (``B = 0``, ``A = ridge I``, ``theta = 0``) the shared model's plus ``x.x / ridge``,
    at the shared model's cost (new items are most candidates of a changing catalogue)."""
    mean, quad = shared_item_moments(shared, experiment.layout, x, items)
    quad = quad + (x @ x) / experiment.ridge
    learned = [i for i, arm in enumerate(ids) if arm in table.extras]
    if learned:
        rows = table.rows(ids[i] for i in learned)
        own = table.state
        arms = ScoringState(own.A_inv[rows], own.theta[rows], own.n[rows], own.n[rows], own.n[rows])
        B = np.stack([table.extras[ids[i]] for i in learned])
        phi = experiment.layout.features(x, items[learned])
        mean[learned], quad[learned] = hybrid_scoring_moments(shared, arms, B, x, phi)
    return mean, quad
