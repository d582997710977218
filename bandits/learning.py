"""Learning from one reward: the rank-one update of one arm.

The update follows the disjoint model of Li et al. (2010): ``A += x x^T`` and
``b += r x`` for the arm that was rewarded. ``A^{-1}`` is kept current by the
Sherman-Morrison formula rather than re-inverted, so one update costs
``O(d^2)`` and touches only that arm's rows.

References
----------
.. [1] L. Li, W. Chu, J. Langford, R. E. Schapire. "A contextual-bandit approach
   to personalized news article recommendation." WWW 2010.
.. [2] J. Sherman, W. J. Morrison. "Adjustment of an inverse matrix corresponding
   to a change in one element of a given matrix." Ann. Math. Stat. 21(1), 1950.
"""

from __future__ import annotations

import math

import numpy as np

from .state import LearningState

__all__ = ["update", "rescale"]


def update(
    state: LearningState,
    arm: int,
    x: np.ndarray,
    reward: float,
    *,
    success: float | None = None,
) -> None:
    """Learn one reward of one arm, in place.

    Afterwards ``A[arm]`` includes ``x x^T``, ``b[arm]`` includes
    ``reward * x``, ``A_inv[arm]`` and ``theta[arm]`` match them, ``n[arm]``
    is one larger and the Beta counts include ``success``. No other arm's rows
    change and no array is reallocated.

    Parameters
    ----------
    state : LearningState
        The state to change.
    arm : int
        Index of the rewarded arm on the state's arm axis.
    x : np.ndarray
        ``(d,)`` context the arm was chosen for.
    reward : float
        The observed reward (finite).
    success : float, optional
        The reward rescaled to [0, 1], added to ``successes[arm]`` (and
        ``1 - success`` to ``failures[arm]``). Defaults to
        ``clip(reward, 0, 1)``; see :func:`rescale`.

    Raises
    ------
    ValueError
        If ``arm`` is out of range, ``x`` has the wrong shape or is not finite,
        ``reward`` is not finite, or ``success`` is outside [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from bandits.state import prior
    >>> s = prior(2, 2)
    >>> update(s, 1, np.array([1.0, 2.0]), 0.5)
    >>> s.n.tolist(), s.theta[0].tolist(), s.successes.tolist()
    ([0.0, 1.0], [0.0, 0.0], [0.0, 0.5])
    """
    n_arms, dim = state.theta.shape
    if not 0 <= arm < n_arms:
        raise ValueError(f"arm {arm} is out of range for {n_arms} arms")
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (dim,):
        raise ValueError(f"x must have shape ({dim},), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x must be finite")
    if not math.isfinite(reward):
        raise ValueError(f"reward must be finite, got {reward!r}")
    if success is None:
        success = min(max(float(reward), 0.0), 1.0)
    elif not 0.0 <= success <= 1.0:
        raise ValueError(f"success must be in [0, 1], got {success!r}")

    A_inv = state.A_inv[arm]  # views: writing through them updates the state
    u = A_inv @ x  # A_inv is symmetric, so x^T A_inv = u^T
    A_inv -= np.outer(u, u) / (1.0 + x @ u)  # outer(u, u) keeps A_inv exactly symmetric
    state.A[arm] += np.outer(x, x)
    state.b[arm] += reward * x
    state.theta[arm] = A_inv @ state.b[arm]
    state.n[arm] += 1.0
    state.successes[arm] += success
    state.failures[arm] += 1.0 - success


def rescale(reward: float, low: float, high: float) -> float:
    """Map a reward from ``[low, high]`` onto [0, 1] for the Beta counts.

    Parameters
    ----------
    reward : float
        The observed reward.
    low, high : float
        The experiment's reward range, ``low <= high``.

    Returns
    -------
    float
        ``(reward - low) / (high - low)`` clipped to [0, 1]. When
        ``high == low`` the range is a single value: 1.0 if
        ``reward >= high``, else 0.0.

    Raises
    ------
    ValueError
        If any argument is NaN, ``low`` or ``high`` is infinite, or ``high < low``.

    Examples
    --------
    >>> rescale(3.0, 1.0, 5.0), rescale(9.0, 1.0, 5.0), rescale(1.0, 1.0, 1.0)
    (0.5, 1.0, 1.0)
    """
    if math.isnan(reward) or not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"cannot rescale {reward!r} onto [{low!r}, {high!r}]")
    if high < low:
        raise ValueError(f"high must be >= low, got low={low!r}, high={high!r}")
    if high == low:
        return 1.0 if reward >= high else 0.0
    return min(max((reward - low) / (high - low), 0.0), 1.0)
