"""The uniform random baseline, registered as the ``random`` policy.

Every candidate scores 0.0 and each slot is drawn uniformly from the
candidates not yet placed, so slot ``j`` of ``C`` candidates has propensity
exactly ``1 / (C - j)``. The module is not called ``random`` so as not to
shadow the standard library.
"""

from __future__ import annotations

import numpy as np

from .policy import PolicyParams, Selection, check_candidates
from .slate import greedy_selection
from .state import ScoringState

__all__ = ["select"]


def select(
    state: ScoringState,
    x: np.ndarray,
    rng: np.random.Generator,
    params: PolicyParams,
    *,
    k: int = 1,
    candidates: np.ndarray | None = None,
) -> Selection:
    """Rank ``k`` arms uniformly at random.

    Parameters
    ----------
    state : ScoringState
        The arms' state; only the number of arms is used.
    x : np.ndarray
        Ignored.
    rng : np.random.Generator
        Source of randomness.
    params : PolicyParams
        Ignored (``epsilon`` would not change the distribution).
    k : int, default 1
        Number of arms to rank.
    candidates : np.ndarray, optional
        Arm indices to choose from; all arms when None.

    Returns
    -------
    Selection
        Scores 0.0 and propensities ``1 / (C - j)``.

    Raises
    ------
    ValueError
        If ``k`` or ``candidates`` is invalid.
    """
    cand, _ = check_candidates(state.theta.shape[0], k, candidates)
    # all scores tie, so every slot is uniform; epsilon=0 keeps 1/(C - j) exact
    return greedy_selection(np.zeros(cand.size), cand, k, rng, 0.0)
