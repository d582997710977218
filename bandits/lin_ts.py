"""Linear Thompson sampling with disjoint per-arm posteriors (Agrawal & Goyal 2013).

Each arm's weights have the posterior ``N(theta_a, v^2 A_a^{-1})``, independent
across arms, so the sampled score ``theta~_a . x`` of arm ``a`` at context
``x`` is exactly ``N(theta_a . x, v^2 x^T A_a^{-1} x)``. Those scalar scores are
sampled directly, one per candidate, with no factor of ``A^{-1}``. The slate is
the top ``k`` of one sample (with the epsilon floor); propensities are Monte
Carlo estimates from ``params.draws`` further samples.

References
----------
.. [1] S. Agrawal, N. Goyal. "Thompson sampling for contextual bandits with
   linear payoffs." ICML 2013.
.. [2] L. Li, W. Chu, J. Langford, R. E. Schapire. "A contextual-bandit approach
   to personalized news article recommendation." WWW 2010 (the disjoint model).
"""

from __future__ import annotations

import numpy as np

from .policy import PolicyParams, Selection, check_candidates, check_context, linear_moments
from .slate import sampled_selection
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
    """Rank ``k`` arms by a posterior sample of their reward at context ``x``.

    Parameters
    ----------
    state : ScoringState
        The arms' state; not modified.
    x : np.ndarray
        ``(d,)`` encoded context.
    rng : np.random.Generator
        Source of the samples and epsilon exploration.
    params : PolicyParams
        ``v`` (posterior scale), ``epsilon`` and ``draws`` are used.
    k : int, default 1
        Number of arms to rank.
    candidates : np.ndarray, optional
        Arm indices to choose from; all arms when None.

    Returns
    -------
    Selection
        Arms best first with their sampled scores and estimated propensities.

    Raises
    ------
    ValueError
        If ``k`` or ``candidates`` is invalid or ``x`` has the wrong shape.
    """
    cand, rows = check_candidates(state.theta.shape[0], k, candidates)
    x = check_context(state, x)
    mean, quad = linear_moments(state, x, rows)
    sd = params.v * np.sqrt(quad)

    def sample(n: int) -> np.ndarray:
        return mean + sd * rng.standard_normal((n, cand.size))

    return sampled_selection(sample, cand, k, rng, params)
