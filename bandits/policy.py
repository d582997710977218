"""What every policy shares: parameters, the selection, validation, semantics.

Every policy module exposes one function::

    select(state, x, rng, params, *, k=1, candidates=None) -> Selection

which ranks ``k`` distinct arms from ``candidates`` (all arms when ``None``)
without changing ``state``. All randomness comes from ``rng``.

Slates and the epsilon floor
----------------------------
Slots are filled in order. For each slot, with probability ``epsilon`` the arm
is drawn uniformly from the candidates not yet placed; otherwise it is the
best-scoring remaining candidate, ties broken uniformly at random.

Propensities
------------
``Selection.propensities[j]`` is the probability that the policy puts the arm
``arms[j]`` in slot ``j`` *given the arms in slots 0..j-1*. For ``k = 1`` it is
simply the probability of choosing that arm. The product over the slots is the
probability of the whole ranked slate, which is what an off-policy estimator
(IPS, SNIPS, doubly robust) divides by.

With ``C`` candidates, slot ``j`` has ``C - j`` remaining candidates.

- Deterministic scores (``linucb``, ``epsilon_greedy``, ``random``): exact,
  ``(1 - epsilon) * [arm among the G tied best remaining] / G + epsilon / (C - j)``.
  ``estimated`` is False.
- Inverse-gap weighting (``squarecb``): the slot's arm is drawn from the
  weights of :func:`bandits.squarecb.inverse_gap_probabilities` over the
  remaining candidates, mixed with the floor; exact, ``estimated`` is False.
- Sampled scores (``lin_ts``, ``beta_ts``): the greedy part is the probability
  that the arm scores highest among the candidates not yet placed. ``lin_ts``
  computes it by one-dimensional quadrature (:func:`bandits.lin_ts.top_probability`;
  Monte Carlo from ``params.draws`` fresh score vectors when some score has no
  spread); ``beta_ts`` estimates it by Monte Carlo, as the share of
  ``params.draws`` draws in which the arm is on top. Either is clipped below at
  ``0.5 / draws`` so an IPS weight is never infinite, then mixed with the
  epsilon floor as above. For ``j >= 1`` this ignores that the earlier slots
  were filled from the same sample, so slate propensities of sampling policies
  are approximate beyond the first slot. ``estimated`` is True.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

from .state import ScoringState

__all__ = [
    "PolicyParams",
    "Selection",
    "check_candidates",
    "check_context",
    "linear_moments",
]


@dataclass(frozen=True)
class PolicyParams:
    """Tuning knobs of the policies; each policy reads the ones it uses.

    Parameters
    ----------
    alpha : float, default 1.0
        LinUCB exploration width (>= 0).
    epsilon : float, default 0.0
        Uniform exploration floor, for every policy, in [0, 1].
    v : float, default 1.0
        Linear Thompson sampling posterior scale (>= 0).
    draws : int, default 1000
        Monte Carlo draws for ``beta_ts`` propensities (and ``lin_ts``'s
        fallback); sets their ``0.5 / draws`` floor (>= 1).
    gamma_scale : float, default 10.0
        ``squarecb`` greediness scale (>= 0): ``gamma = gamma_scale * t **
        gamma_exponent`` after ``t`` learned rewards (Vowpal Wabbit's default).
    gamma_exponent : float, default 0.5
        ``squarecb`` exponent of ``t`` in ``gamma``, in [0, 1].

    Raises
    ------
    ValueError
        If a value is out of its range or not finite.
    """

    alpha: float = 1.0
    epsilon: float = 0.0
    v: float = 1.0
    draws: int = 1000
    gamma_scale: float = 10.0
    gamma_exponent: float = 0.5

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon!r}")
        if not (math.isfinite(self.v) and self.v >= 0):
            raise ValueError(f"v must be a finite number >= 0, got {self.v!r}")
        integer = isinstance(self.draws, (int, np.integer)) and not isinstance(self.draws, bool)
        if not integer or self.draws < 1:
            raise ValueError(f"draws must be an int >= 1, got {self.draws!r}")
        if not (math.isfinite(self.gamma_scale) and self.gamma_scale >= 0):
            raise ValueError(f"gamma_scale must be a finite number >= 0, got {self.gamma_scale!r}")
        if not 0.0 <= self.gamma_exponent <= 1.0:
            raise ValueError(f"gamma_exponent must be in [0, 1], got {self.gamma_exponent!r}")


@dataclass(frozen=True)
class Selection:
    """A ranked slate chosen by a policy.

    Attributes
    ----------
    arms : np.ndarray
        ``(k,)`` int, indices into the full arm axis of the state, best first.
    scores : np.ndarray
        ``(k,)`` float64, the policy's score of each chosen arm.
    propensities : np.ndarray
        ``(k,)`` float64, probability of each slot's arm given the slots before
        it (see the module docstring).
    estimated : bool
        True for the sampling policies, whose propensities are computed
        (quadrature or Monte Carlo) rather than read off the scores.
    """

    arms: np.ndarray
    scores: np.ndarray
    propensities: np.ndarray
    estimated: bool


def check_candidates(
    n_arms: int, k: int, candidates: np.ndarray | None
) -> tuple[np.ndarray, slice | np.ndarray]:
    """Validate a request's slate size and candidate arms.

    Parameters
    ----------
    n_arms : int
        Number of arms ``K`` in the state.
    k : int
        Requested slate size.
    candidates : array_like of int, optional
        Distinct arm indices in ``range(K)``; None means all arms.

    Returns
    -------
    cand : np.ndarray
        ``(C,)`` intp candidate indices.
    rows : slice or np.ndarray
        What to index the state's arm axis with: ``slice(None)`` when all arms
        are candidates (a view, no copy), else ``cand``.

    Raises
    ------
    ValueError
        If ``candidates`` is empty, not 1-d integers, out of range or has
        duplicates, or ``k`` is not an integer in ``[1, C]``.
    """
    if candidates is None:
        cand = np.arange(n_arms)
    else:
        cand = np.asarray(candidates)
        if cand.ndim != 1 or cand.size == 0:
            raise ValueError("candidates must be a non-empty 1-d array of arm indices")
        if not np.issubdtype(cand.dtype, np.integer):
            raise ValueError(f"candidates must be integers, got dtype {cand.dtype}")
        if cand.min() < 0 or cand.max() >= n_arms:
            raise ValueError(f"candidates must be in range({n_arms})")
        if np.unique(cand).size != cand.size:
            raise ValueError("candidates must not repeat an arm")
        cand = cand.astype(np.intp, copy=False)
    if cand.size == 0:
        raise ValueError("there are no arms to choose from")
    try:
        if isinstance(k, (bool, np.bool_)):
            raise TypeError
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"k must be an integer, got {k!r}") from None
    if not 1 <= k <= cand.size:
        raise ValueError(f"k must be between 1 and {cand.size} (the candidates), got {k}")
    return cand, (slice(None) if candidates is None else cand)


def check_context(state: ScoringState, x: np.ndarray) -> np.ndarray:
    """Return ``x`` as a float64 ``(d,)`` array, or raise ValueError if its shape is wrong."""
    x = np.asarray(x, dtype=np.float64)
    dim = state.theta.shape[1]
    if x.shape != (dim,):
        raise ValueError(f"x must have shape ({dim},), got {x.shape}")
    return x


def linear_moments(
    state: ScoringState, x: np.ndarray, rows: slice | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge prediction and its uncertainty for the arms ``rows`` at context ``x``.

    Parameters
    ----------
    state : ScoringState
        The arms' state.
    x : np.ndarray
        ``(d,)`` context.
    rows : slice or np.ndarray
        The arms to score (``slice(None)`` for all, which avoids a copy).

    Returns
    -------
    mean : np.ndarray
        ``(C,)`` ``theta_a . x``.
    quad : np.ndarray
        ``(C,)`` ``x^T A_inv_a x``, clipped below at 0 against rounding.
    """
    n_arms = state.A_inv.shape[0]
    if isinstance(rows, slice) or 4 * len(rows) >= n_arms:
        # Most arms: one (K, d^2) matrix-vector product over all of them beats
        # gathering the candidates' matrices first (a copy of C * d^2 floats).
        quad = state.A_inv.reshape(n_arms, -1) @ np.outer(x, x).ravel()
        mean = state.theta @ x
        quad, mean = quad[rows], mean[rows]
    else:
        quad = (state.A_inv[rows] @ x) @ x  # not einsum('kij,i,j->k'): 3x slower
        mean = state.theta[rows] @ x
    return mean, np.maximum(quad, 0.0)
