"""Slates for many contexts at once: what :func:`bandits.select` gives row by row, vectorised.

For the deterministic-score policies (``linucb``, ``epsilon_greedy``,
``random``) the scores of a batch are two matrix products (the means
``X @ theta.T`` and the widths ``x^T A_inv x`` of every row and arm as one
product of the rows' outer products with the stacked ``A_inv``: the sums
:func:`bandits.policy.linear_moments` forms for one row, in another order,
so equal to about 1e-15), and the slate
follows the semantics of :mod:`bandits.policy`: each slot is the best
remaining candidate (ties broken uniformly) or, with probability
``epsilon``, a uniform pick among the remaining ones, with the same exact
propensities. The other policies (``lin_ts``, ``beta_ts``, ``squarecb``)
draw per row: they go through :func:`bandits.select` one row at a time.

The draws are not the ones ``select`` would make with the same generator
(the batch draws for all rows at once), but their distribution is the same,
and the propensities equal ``select``'s for the same slate (the scores to rounding).

>>> import numpy as np
>>> from bandits import PolicyParams, prior
>>> state = prior(3, 2)
>>> state.theta[:] = [[0.1, 0.0], [0.5, 0.0], [0.0, 1.0]]
>>> X = np.array([[1.0, 0.0], [1.0, 1.0]])
>>> out = select_many("linucb", state, X, np.random.default_rng(0), PolicyParams(alpha=0.0), k=2)
>>> out.arms.tolist(), out.propensities.tolist()
([[1, 0], [2, 1]], [[1.0, 1.0], [1.0, 1.0]])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import select
from .policy import PolicyParams, check_candidates
from .state import ScoringState

__all__ = ["Selections", "select_many", "VECTORISED"]

VECTORISED = frozenset({"linucb", "epsilon_greedy", "random"})
WIDTH_ROWS = 2048  # rows per product in _widths: 2048 x 528 floats at d = 32 is 8.6 MB


@dataclass(frozen=True)
class Selections:
    """The slates of ``n`` contexts.

    Attributes
    ----------
    arms : np.ndarray
        ``(n, k)`` intp arm indices, best first.
    scores : np.ndarray
        ``(n, k)`` float64, each slot's score.
    propensities : np.ndarray
        ``(n, k)`` float64, each slot's probability given the slots before it.
    estimated : bool
        True for the sampling policies (see :class:`bandits.policy.Selection`).
    """

    arms: np.ndarray
    scores: np.ndarray
    propensities: np.ndarray
    estimated: bool


def select_many(
    policy: str,
    state: ScoringState,
    X: np.ndarray,
    rng: np.random.Generator,
    params: PolicyParams,
    *,
    k: int = 1,
    candidates: np.ndarray | None = None,
) -> Selections:
    """Rank ``k`` arms for each row of ``X`` with ``policy``, as :func:`bandits.select` does.

    Parameters
    ----------
    policy : str
        A key of :data:`bandits.POLICIES`.
    state : ScoringState
        The arms' state; not modified.
    X : np.ndarray
        ``(n, d)`` encoded contexts.
    rng : np.random.Generator
        Source of tie-breaks and exploration.
    params : PolicyParams
        The policy's knobs.
    k : int, default 1
        Slate size.
    candidates : np.ndarray, optional
        Arm indices every row chooses from; all arms when None.

    Returns
    -------
    Selections
        ``(n, k)`` arms, scores and propensities.

    Raises
    ------
    ValueError
        If the policy is unknown, ``k`` or ``candidates`` is invalid, ``X`` has
        the wrong shape, or a score is not finite.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != state.theta.shape[1]:
        raise ValueError(f"X must have shape (n, {state.theta.shape[1]}), got {X.shape}")
    cand, rows = check_candidates(state.theta.shape[0], k, candidates)
    if policy not in VECTORISED:
        return _row_by_row(policy, state, X, rng, params, k, candidates)
    if policy == "random":
        scores, epsilon = np.zeros((X.shape[0], cand.size)), 0.0
    else:
        scores, epsilon = X @ state.theta[rows].T, params.epsilon
        if policy == "linucb":
            scores = scores + params.alpha * np.sqrt(_widths(state, X, rows))
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    positions, propensities = greedy_slates(scores, k, rng, epsilon)
    arms = cand[positions]
    return Selections(arms, np.take_along_axis(scores, positions, axis=1), propensities, False)


def _widths(state: ScoringState, X: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """``(n, C)`` ``x^T A_inv_a x`` of every row and candidate, clipped below at 0.

    ``A_inv`` is symmetric: the sum runs over its upper triangle (off-diagonal
    terms twice), half the products of the full ``x x^T``.
    """
    d = X.shape[1]
    upper, right = np.triu_indices(d)
    weights = state.A_inv[rows][:, upper, right] * np.where(upper == right, 1.0, 2.0)
    out = np.empty((X.shape[0], weights.shape[0]))
    columns = np.ascontiguousarray(X.T)
    for start in range(0, X.shape[0], WIDTH_ROWS):  # bounds the (d(d+1)/2, rows) products
        part = columns[:, start : start + WIDTH_ROWS]
        out[start : start + WIDTH_ROWS] = (weights @ (part[upper] * part[right])).T
    return np.maximum(out, 0.0)


def greedy_slates(
    scores: np.ndarray, k: int, rng: np.random.Generator, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, :func:`bandits.slate.greedy_slate`: ``k`` positions and their propensities.

    Parameters
    ----------
    scores : np.ndarray
        ``(n, C)`` finite scores.
    k : int
        Slate size, ``1 <= k <= C``.
    rng : np.random.Generator
        Source of the tie-breaks and exploration.
    epsilon : float
        Probability that a slot is filled uniformly from the remaining candidates.

    Returns
    -------
    positions : np.ndarray
        ``(n, k)`` intp positions into each row of ``scores``, best first.
    propensities : np.ndarray
        ``(n, k)`` probability of each slot given the slots before it.
    """
    n, n_cand = scores.shape
    everyone = np.arange(n)
    work = scores.copy() if k > 1 else scores  # placed candidates become -inf
    positions = np.empty((n, k), dtype=np.intp)
    propensities = np.empty((n, k))
    for j in range(k):  # a loop over slots, each step over every row
        best = work == work.max(axis=1, keepdims=True)
        n_best = np.count_nonzero(best, axis=1)
        pick = np.argmax(best, axis=1)
        tied = np.flatnonzero(n_best > 1)
        if tied.size:  # uniform among the tied best: the largest of a uniform key
            keys = np.where(best[tied], rng.random((tied.size, n_cand)), -1.0)
            pick[tied] = np.argmax(keys, axis=1)
        if epsilon > 0.0:
            explore = np.flatnonzero(rng.random(n) < epsilon)
            if explore.size:  # the nth of the remaining candidates, n uniform
                left = work[explore] != -np.inf
                nth = (rng.random(explore.size) * (n_cand - j)).astype(np.intp)
                pick[explore] = np.argmax(np.cumsum(left, axis=1) > nth[:, None], axis=1)
        positions[:, j] = pick
        # the expression of bandits.slate.greedy_slate, for equal floats
        propensities[:, j] = (1.0 - epsilon) * best[everyone, pick] / n_best + epsilon / (
            n_cand - j
        )
        if j + 1 < k:
            work[everyone, pick] = -np.inf
    return positions, propensities


def _row_by_row(
    policy: str,
    state: ScoringState,
    X: np.ndarray,
    rng: np.random.Generator,
    params: PolicyParams,
    k: int,
    candidates: np.ndarray | None,
) -> Selections:
    picked = [select(policy, state, x, rng, params, k=k, candidates=candidates) for x in X]
    if not picked:
        empty = np.empty((0, k))
        return Selections(empty.astype(np.intp), empty, empty.copy(), policy != "squarecb")
    return Selections(
        np.stack([s.arms for s in picked]),
        np.stack([s.scores for s in picked]),
        np.stack([s.propensities for s in picked]),
        picked[0].estimated,
    )
