"""Choose among candidates by their item features (the /choose side of an item model)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from app.config import Experiment
from app.errors import ApiError
from bandits import FeatureError, ScoringState
from bandits.item_models import select_items, shared_moments
from bandits.policy import Selection


def encode_items(experiment: Experiment, items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The ``(C, q)`` encoded item features of the candidates, in order.

    A feature the item lacks encodes as for the context (0, or no category);
    400 ``invalid_feature`` naming the candidate if a value cannot be encoded.
    """
    spec = experiment.item_features
    out = np.empty((len(items), spec.dim))
    for i, features in enumerate(items):
        try:
            out[i] = spec.encode(features)
        except FeatureError as exc:
            field = exc.field.removeprefix("context")
            raise ApiError(
                400,
                "invalid_feature",
                f"candidate {i}: {exc.message}",
                f"candidates[{i}].features{field}",
            ) from exc
    return out


def choose_items(
    experiment: Experiment,
    state: ScoringState,
    x: np.ndarray,
    items: np.ndarray,
    rng: np.random.Generator,
    k: int,
) -> Selection:
    """Rank ``k`` of the candidates (rows of ``items``) under the experiment's shared model.

    The selection's ``arms`` are positions into the candidates.
    """
    phi = experiment.layout.features(x, items)
    mean, quad = shared_moments(state, phi)  # row 0 is the shared model; spare rows unused
    learned = float(state.n[0])  # rewards learned: t of SquareCB's gamma
    return select_items(experiment.policy, mean, quad, rng, experiment.params, k=k, learned=learned)
