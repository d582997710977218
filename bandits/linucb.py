"""LinUCB with disjoint linear models (Li et al. 2010).

Each arm ``a`` scores ``theta_a . x + alpha * sqrt(x^T A_a^{-1} x)``: the ridge
estimate of its reward plus a confidence width that shrinks as the arm learns.
All candidate arms are scored at once. Propensities are exact.

References
----------
.. [1] L. Li, W. Chu, J. Langford, R. E. Schapire. "A contextual-bandit approach
   to personalized news article recommendation." WWW 2010, Algorithm 1.
"""

from __future__ import annotations

import numpy as np

from .policy import PolicyParams, Selection, check_candidates, check_context, linear_moments
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
    """Rank ``k`` arms by their upper confidence bound at context ``x``.

    Parameters
    ----------
    state : ScoringState
        The arms' state; not modified.
    x : np.ndarray
        ``(d,)`` encoded context.
    rng : np.random.Generator
        Source of tie-breaks and epsilon exploration.
    params : PolicyParams
        ``alpha`` (confidence width) and ``epsilon`` (uniform floor) are used.
    k : int, default 1
        Number of arms to rank.
    candidates : np.ndarray, optional
        Arm indices to choose from; all arms when None.

    Returns
    -------
    Selection
        Arms best first with their UCB scores and exact propensities.

    Raises
    ------
    ValueError
        If ``k`` or ``candidates`` is invalid or ``x`` has the wrong shape.

    Examples
    --------
    Three arms, two features (intercept and one numeric); arm 1 is best at
    ``h = 0`` and arm 2 at ``h = 1``:

    >>> import numpy as np
    >>> from bandits import PolicyParams, prior, update
    >>> rng = np.random.default_rng(2010)
    >>> true_theta = np.array([[0.1, 0.0], [0.6, 0.0], [0.1, 0.9]])
    >>> state = prior(n_arms=3, dim=2)
    >>> for _ in range(300):
    ...     x = np.array([1.0, rng.random()])
    ...     arm = int(select(state, x, rng, PolicyParams(alpha=0.5)).arms[0])
    ...     update(state, arm, x, true_theta[arm] @ x + 0.1 * rng.standard_normal())
    >>> greedy = PolicyParams(alpha=0.0)
    >>> [int(select(state, np.array([1.0, h]), rng, greedy).arms[0]) for h in (0.0, 1.0)]
    [1, 2]

    A ranked slate of all three arms with a 20% exploration floor. Each slot's
    propensity is given the slots before it: the best remaining arm gets
    ``0.8 + 0.2 / (3 - j)`` and any other ``0.2 / (3 - j)``:

    >>> explore = PolicyParams(alpha=0.0, epsilon=0.2)
    >>> sel = select(state, np.array([1.0, 1.0]), rng, explore, k=3)
    >>> sel.arms.tolist(), sel.propensities.round(4).tolist(), sel.estimated
    ([0, 2, 1], [0.0667, 0.9, 1.0], False)

    Here slot 0 explored (arm 0, ``0.2 / 3``), slot 1 took the best remaining
    arm (``0.8 + 0.2 / 2``) and slot 2 had one arm left.
    """
    cand, rows = check_candidates(state.theta.shape[0], k, candidates)
    x = check_context(state, x)
    mean, quad = linear_moments(state, x, rows)
    scores = mean + params.alpha * np.sqrt(quad)
    return greedy_selection(scores, cand, k, rng, params.epsilon)
