"""Epsilon-greedy on the disjoint ridge estimates.

Each arm scores its ridge estimate ``theta_a . x`` (the disjoint model of
Li et al. 2010 without the confidence width); exploration comes only from the
uniform floor ``params.epsilon``. Propensities are exact.

References
----------
.. [1] R. S. Sutton, A. G. Barto. "Reinforcement Learning: An Introduction",
   2nd ed., 2018, section 2.2.
.. [2] L. Li, W. Chu, J. Langford, R. E. Schapire. "A contextual-bandit approach
   to personalized news article recommendation." WWW 2010.
"""

from __future__ import annotations

import numpy as np

from .policy import PolicyParams, Selection, check_candidates, check_context
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
    """Rank ``k`` arms by estimated reward, exploring uniformly with probability epsilon.

    Parameters
    ----------
    state : ScoringState
        The arms' state; not modified.
    x : np.ndarray
        ``(d,)`` encoded context.
    rng : np.random.Generator
        Source of tie-breaks and exploration.
    params : PolicyParams
        ``epsilon`` is used.
    k : int, default 1
        Number of arms to rank.
    candidates : np.ndarray, optional
        Arm indices to choose from; all arms when None.

    Returns
    -------
    Selection
        Arms best first with their estimated rewards and exact propensities.

    Raises
    ------
    ValueError
        If ``k`` or ``candidates`` is invalid or ``x`` has the wrong shape.
    """
    cand, rows = check_candidates(state.theta.shape[0], k, candidates)
    x = check_context(state, x)
    return greedy_selection(state.theta[rows] @ x, cand, k, rng, params.epsilon)
