"""SquareCB: inverse-gap weighting over ridge predictions (Foster & Rakhlin 2020).

With predictions ``yhat_a`` of the candidates' rewards (here the per-arm ridge
estimate ``theta_a . x``) and ``C`` candidates, every arm that is not the best
gets probability ``1 / (C + gamma * (yhat_best - yhat_a))`` and the best arm
gets the rest (arms tied for best share it equally). A larger gap to the best
prediction means less exploration of that arm; a larger ``gamma`` means less
exploration overall. The greediness grows with the data, as in the paper and
in Vowpal Wabbit's ``--squarecb``::

    gamma = gamma_scale * t ** gamma_exponent

with ``t`` the number of rewards the state has learned (the sum of the arms'
update counts ``n``, so it is the same for the API, the worker and a
rebuild) and Vowpal Wabbit's defaults ``gamma_scale = 10``,
``gamma_exponent = 0.5`` (``t = 0`` gives ``gamma = 0``: uniform). The
probabilities are the distribution the arm is drawn from, so propensities
are exact by construction. The epsilon floor mixes in as for every policy:
``(1 - epsilon) * p + epsilon / C``.

Slates are drawn slot by slot: slot ``j`` applies the same rule to the
candidates not placed yet (``C - j`` of them), and its propensity is the
probability of its arm given the slots before it (:mod:`bandits.policy`).

:func:`inverse_gap_probabilities` and :func:`select_from_predictions` take
any predictions, so other reward models (shared or hybrid) reuse them;
:func:`select` is the per-arm model's policy.

References
----------
.. [1] D. Foster, A. Rakhlin. "Beyond UCB: optimal and efficient contextual
   bandits with regression oracles." ICML 2020.
.. [2] Vowpal Wabbit, ``vowpalwabbit/core/src/reductions/cb/cb_explore_adf_squarecb.cc``
   (the ``gamma`` schedule and its defaults).
"""

from __future__ import annotations

import numpy as np

from .policy import PolicyParams, Selection, check_candidates, check_context
from .state import ScoringState

__all__ = [
    "select",
    "select_from_predictions",
    "inverse_gap_probabilities",
    "gamma",
    "learned_rewards",
    "slot0_probabilities",
]


def gamma(t: float, scale: float, exponent: float) -> float:
    """The greediness ``scale * t ** exponent`` after ``t`` learned rewards.

    >>> gamma(100, 10.0, 0.5), gamma(0, 10.0, 0.5)
    (100.0, 0.0)
    """
    return float(scale * float(t) ** exponent)


def learned_rewards(state: ScoringState) -> float:
    """``t`` of the ``gamma`` schedule: the rewards every arm of ``state`` has learned."""
    return float(state.n.sum())


def inverse_gap_probabilities(predictions: np.ndarray, greediness: float) -> np.ndarray:
    """Inverse-gap weights of predicted rewards (higher is better), summing to 1.

    Parameters
    ----------
    predictions : np.ndarray
        ``(C,)`` finite predicted rewards of the candidates.
    greediness : float
        ``gamma >= 0``.

    Returns
    -------
    np.ndarray
        ``(C,)``: ``1 / (C + gamma * gap)`` for every arm below the best
        prediction, the rest shared equally by the arms at the best.

    Examples
    --------
    >>> inverse_gap_probabilities(np.array([0.5, 0.3, 0.5, 0.0]), 10.0).round(4).tolist()
    [0.3611, 0.1667, 0.3611, 0.1111]
    """
    gap = predictions.max() - predictions
    p = 1.0 / (predictions.size + greediness * gap)
    best = gap == 0.0
    p[best] = 0.0
    p[best] = (1.0 - p.sum()) / np.count_nonzero(best)
    return p


def select_from_predictions(
    predictions: np.ndarray,
    cand: np.ndarray,
    k: int,
    rng: np.random.Generator,
    greediness: float,
    epsilon: float = 0.0,
) -> Selection:
    """Draw a slate of ``k`` arms slot by slot from inverse-gap weights.

    Parameters
    ----------
    predictions : np.ndarray
        ``(C,)`` predicted rewards of the candidates ``cand``.
    cand : np.ndarray
        ``(C,)`` arm indices on the full arm axis.
    k : int
        Slate size, ``1 <= k <= C``.
    rng : np.random.Generator
        Source of the draws (one uniform number per slot).
    greediness : float
        ``gamma``.
    epsilon : float, default 0.0
        Uniform exploration floor, mixed in per slot.

    Returns
    -------
    Selection
        The arms in slot order, their predictions as scores, and the exact
        probability of each slot's arm given the slots before it
        (``estimated=False``).

    Raises
    ------
    ValueError
        If a prediction is NaN or infinite.
    """
    if not np.isfinite(predictions).all():
        raise ValueError("predictions must be finite")
    left = np.arange(predictions.size)  # positions not placed yet
    positions = np.empty(k, dtype=np.intp)
    propensities = np.empty(k)
    for j in range(k):  # a loop over slots, not arms: each step is vectorised over arms
        p = inverse_gap_probabilities(predictions if j == 0 else predictions[left], greediness)
        if epsilon > 0.0:
            p = (1.0 - epsilon) * p + epsilon / left.size
        cumulative = np.cumsum(p)
        draw = rng.random() * cumulative[-1]
        i = min(int(np.searchsorted(cumulative, draw, side="right")), p.size - 1)
        positions[j] = left[i]
        propensities[j] = p[i]
        if j + 1 < k:
            left = np.delete(left, i)
    return Selection(cand[positions], predictions[positions], propensities, False)


def select(
    state: ScoringState,
    x: np.ndarray,
    rng: np.random.Generator,
    params: PolicyParams,
    *,
    k: int = 1,
    candidates: np.ndarray | None = None,
) -> Selection:
    """Draw ``k`` arms by inverse-gap weighting of their ridge predictions at ``x``.

    Parameters
    ----------
    state : ScoringState
        The arms' state; not modified.
    x : np.ndarray
        ``(d,)`` encoded context.
    rng : np.random.Generator
        Source of the draws.
    params : PolicyParams
        ``gamma_scale``, ``gamma_exponent`` and ``epsilon`` are used.
    k : int, default 1
        Number of arms to rank.
    candidates : np.ndarray, optional
        Arm indices to choose from; all arms when None.

    Returns
    -------
    Selection
        Arms in slot order with their predicted rewards and exact propensities.

    Raises
    ------
    ValueError
        If ``k`` or ``candidates`` is invalid or ``x`` has the wrong shape.

    Examples
    --------
    Three arms, two features; arm 1 is best at ``h = 0``. After 400 rewards
    ``gamma = 10 * sqrt(400) = 200``, so an arm 0.44 below the best gets
    ``1 / (3 + 200 * 0.44) = 0.011``. A slate of all three, each slot's
    propensity given the slots before it (the last slot has one arm left):

    >>> import numpy as np
    >>> from bandits import prior, update
    >>> rng = np.random.default_rng(2020)
    >>> true_theta = np.array([[0.1, 0.0], [0.6, 0.0], [0.1, 0.9]])
    >>> state = prior(n_arms=3, dim=2)
    >>> for _ in range(400):
    ...     x = np.array([1.0, rng.random()])
    ...     arm = int(select(state, x, rng, PolicyParams()).arms[0])
    ...     update(state, arm, x, true_theta[arm] @ x + 0.1 * rng.standard_normal())
    >>> sel = select(state, np.array([1.0, 0.0]), rng, PolicyParams(), k=3)
    >>> sel.arms.tolist(), sel.propensities.round(3).tolist()
    ([1, 2, 0], [0.979, 0.932, 1.0])
    """
    cand, rows = check_candidates(state.theta.shape[0], k, candidates)
    x = check_context(state, x)
    predictions = state.theta[rows] @ x
    greediness = gamma(learned_rewards(state), params.gamma_scale, params.gamma_exponent)
    return select_from_predictions(predictions, cand, k, rng, greediness, params.epsilon)


def slot0_probabilities(
    state: ScoringState, features: np.ndarray, params: PolicyParams, allowed: np.ndarray
) -> np.ndarray:
    """Slot-0 probability of every arm at every context, for off-policy evaluation.

    Parameters
    ----------
    state : ScoringState
        The frozen model; ``gamma`` comes from its learned rewards, as in :func:`select`.
    features : np.ndarray
        ``(n, d)`` contexts.
    params : PolicyParams
        ``gamma_scale``, ``gamma_exponent`` and ``epsilon``.
    allowed : np.ndarray
        ``(n, K)`` bool: each context's candidates (the others get 0).

    Returns
    -------
    np.ndarray
        ``(n, K)``: what :func:`select` would draw slot 0 from; rows sum to 1
        (0 for a row without candidates).
    """
    greediness = gamma(learned_rewards(state), params.gamma_scale, params.gamma_exponent)
    predictions = np.where(allowed, features @ state.theta.T, -np.inf)
    count = np.maximum(allowed.sum(axis=1, keepdims=True), 1)
    top = predictions.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # rows without candidates: inf - inf
        gap = np.where(allowed, top - predictions, np.inf)
    p = np.where(allowed, 1.0 / (count + greediness * gap), 0.0)
    best = allowed & (gap == 0.0)
    p[best] = 0.0
    share = (1.0 - p.sum(axis=1, keepdims=True)) / np.maximum(best.sum(axis=1, keepdims=True), 1)
    p = np.where(best, share, p)
    return (1.0 - params.epsilon) * p + params.epsilon * allowed / count
