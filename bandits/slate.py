"""Slate building shared by the policies: greedy with an epsilon floor.

Deterministic-score policies get exact propensities from
:func:`greedy_selection`; sampling policies get Monte Carlo estimates from
:func:`sampled_selection`. The semantics are in :mod:`bandits.policy`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .policy import PolicyParams, Selection

__all__ = [
    "slot_probabilities",
    "greedy_slate",
    "greedy_selection",
    "sampled_propensities",
    "sampled_selection",
]


def slot_probabilities(scores: np.ndarray, remaining: np.ndarray, epsilon: float) -> np.ndarray:
    """Probability of each candidate filling the next slot, for deterministic scores.

    Parameters
    ----------
    scores : np.ndarray
        ``(C,)`` finite scores of the candidates.
    remaining : np.ndarray
        ``(C,)`` bool, True for candidates not yet placed (at least one).
    epsilon : float
        Uniform exploration floor.

    Returns
    -------
    np.ndarray
        ``(C,)`` float64, zero for placed candidates, summing to 1.
    """
    best = remaining & (scores == scores[remaining].max())
    n_left = np.count_nonzero(remaining)
    return (1.0 - epsilon) * best / np.count_nonzero(best) + epsilon * remaining / n_left


def greedy_slate(
    scores: np.ndarray, k: int, rng: np.random.Generator, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """Rank ``k`` candidates by score with an epsilon floor per slot.

    Parameters
    ----------
    scores : np.ndarray
        ``(C,)`` finite scores of the candidates.
    k : int
        Slate size, ``1 <= k <= C``.
    rng : np.random.Generator
        Source of the exploration coin flips and tie-breaks.
    epsilon : float
        Probability that a slot is filled uniformly from the remaining candidates.

    Returns
    -------
    positions : np.ndarray
        ``(k,)`` intp positions into ``scores``, best first.
    propensities : np.ndarray
        ``(k,)`` exact probability of each slot given the slots before it.

    Raises
    ------
    ValueError
        If a score is NaN or infinite.
    """
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    n = scores.shape[0]
    remaining = np.ones(n, dtype=bool)
    positions = np.empty(k, dtype=np.intp)
    propensities = np.empty(k)
    for j in range(k):  # a loop over slots, not arms: each step is vectorised over arms
        # the pick's entry of slot_probabilities(scores, remaining, epsilon), without the vector
        top = scores.max() if j == 0 else scores[remaining].max()
        best = remaining & (scores == top)
        n_best = np.count_nonzero(best)
        if epsilon > 0.0 and rng.random() < epsilon:
            pool = np.flatnonzero(remaining)
        else:
            pool = np.flatnonzero(best)
        pick = pool[rng.integers(pool.size)] if pool.size > 1 else pool[0]
        positions[j] = pick
        propensities[j] = (1.0 - epsilon) * best[pick] / n_best + epsilon / (n - j)
        remaining[pick] = False
    return positions, propensities


def greedy_selection(
    scores: np.ndarray, cand: np.ndarray, k: int, rng: np.random.Generator, epsilon: float
) -> Selection:
    """Build the :class:`Selection` of a deterministic-score policy.

    Parameters
    ----------
    scores : np.ndarray
        ``(C,)`` scores of the candidates ``cand``.
    cand : np.ndarray
        ``(C,)`` arm indices on the full arm axis.
    k : int
        Slate size.
    rng : np.random.Generator
        Source of randomness.
    epsilon : float
        Uniform exploration floor.

    Returns
    -------
    Selection
        With exact propensities (``estimated=False``).
    """
    positions, propensities = greedy_slate(scores, k, rng, epsilon)
    return Selection(cand[positions], scores[positions], propensities, False)


def sampled_propensities(draws: np.ndarray, positions: np.ndarray, epsilon: float) -> np.ndarray:
    """Estimate slot propensities of a sampling policy by Monte Carlo.

    Parameters
    ----------
    draws : np.ndarray
        ``(D, C)`` independent samples of the candidates' scores; not modified.
    positions : np.ndarray
        ``(k,)`` positions into the candidates of the chosen slate, in slot order.
    epsilon : float
        Uniform exploration floor.

    Returns
    -------
    np.ndarray
        ``(k,)``: for slot ``j``, ``(1 - epsilon) * p + epsilon / (C - j)``,
        where ``p`` is the share of draws in which the slot's candidate scores
        highest among those not placed in slots ``0..j-1`` (ties share a draw
        equally), clipped below at ``0.5 / D``.
    """
    n_draws, n_cand = draws.shape
    work = draws if len(positions) == 1 else draws.copy()
    out = np.empty(len(positions))
    for j, pos in enumerate(positions):  # a loop over slots, not arms
        at_top = work == work.max(axis=1, keepdims=True)
        share = (at_top[:, pos] / np.count_nonzero(at_top, axis=1)).mean()
        out[j] = (1.0 - epsilon) * max(share, 0.5 / n_draws) + epsilon / (n_cand - j)
        if j + 1 < len(positions):
            work[:, pos] = -np.inf
    return out


def sampled_selection(
    sample: Callable[[int], np.ndarray],
    cand: np.ndarray,
    k: int,
    rng: np.random.Generator,
    params: PolicyParams,
) -> Selection:
    """Build the :class:`Selection` of a sampling (Thompson) policy.

    Parameters
    ----------
    sample : callable
        ``sample(n)`` returns ``(n, C)`` independent score vectors of the
        candidates, drawn from ``rng``.
    cand : np.ndarray
        ``(C,)`` arm indices on the full arm axis.
    k : int
        Slate size.
    rng : np.random.Generator
        Source of randomness.
    params : PolicyParams
        ``epsilon`` and ``draws`` are used.

    Returns
    -------
    Selection
        Top-``k`` of one sampled score vector (with the epsilon floor), scored
        by that sample, with Monte Carlo propensities (``estimated=True``).
    """
    draws = sample(params.draws + 1)  # row 0 decides, the rest estimate propensities
    positions, _ = greedy_slate(draws[0], k, rng, params.epsilon)
    propensities = sampled_propensities(draws[1:], positions, params.epsilon)
    return Selection(cand[positions], draws[0, positions], propensities, True)
