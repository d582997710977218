"""Beta-Bernoulli Thompson sampling, without context.

Each arm's success rate has the posterior ``Beta(1 + successes, 1 + failures)``
(a uniform prior updated with rewards rescaled to [0, 1]). The slate is the
top ``k`` of one sample (with the epsilon floor); propensities are Monte Carlo
estimates from ``params.draws`` further samples.

References
----------
.. [1] W. R. Thompson. "On the likelihood that one unknown probability exceeds
   another in view of the evidence of two samples." Biometrika 25, 1933.
.. [2] S. Agrawal, N. Goyal. "Analysis of Thompson sampling for the multi-armed
   bandit problem." COLT 2012 (non-binary rewards via [0, 1] rescaling).
"""

from __future__ import annotations

import numpy as np

from .policy import PolicyParams, Selection, check_candidates
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
    """Rank ``k`` arms by a posterior sample of their success rate.

    Parameters
    ----------
    state : ScoringState
        The arms' state; ``successes`` and ``failures`` are used.
    x : np.ndarray
        Ignored: this policy has no context.
    rng : np.random.Generator
        Source of the samples and epsilon exploration.
    params : PolicyParams
        ``epsilon`` and ``draws`` are used.
    k : int, default 1
        Number of arms to rank.
    candidates : np.ndarray, optional
        Arm indices to choose from; all arms when None.

    Returns
    -------
    Selection
        Arms best first with their sampled success rates and estimated
        propensities.

    Raises
    ------
    ValueError
        If ``k`` or ``candidates`` is invalid.
    """
    cand, rows = check_candidates(state.theta.shape[0], k, candidates)
    a = 1.0 + state.successes[rows]
    b = 1.0 + state.failures[rows]

    def sample(n: int) -> np.ndarray:
        return rng.beta(a, b, size=(n, cand.size))

    return sampled_selection(sample, cand, k, rng, params)
