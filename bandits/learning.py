"""Learning from one reward: the rank-one update of one arm.

The update follows the disjoint model of Li et al. (2010): ``A += x x^T`` and
``b += r x`` for the arm that was rewarded. ``A^{-1}`` is kept current by the
Sherman-Morrison formula rather than re-inverted, so one update costs
``O(d^2)`` and touches only that arm's rows.

Forgetting (``discount < 1``)
-----------------------------
To follow rewards that drift, an update can first discount what the arm has
learned, by ``gamma = discount``, before adding the new reward::

    A <- gamma * A + c * e_j e_j^T + x x^T,   b <- gamma * b + r x,
    successes <- gamma * successes + s,      failures <- gamma * failures + (1 - s),

where ``j = n mod d`` (``n`` = the arm's update count before this one) and
``c = ridge * (1 - gamma^d)``. It is applied per update of *that* arm, so an
observation ``m`` updates of the arm ago weighs ``gamma^m``: the memory is
about ``1 / (1 - gamma)`` of the arm's own updates, not a time span.

Plain discounting (``A <- gamma * A + x x^T``) would discount the ridge prior
too: in a direction the arm never sees, ``A``'s eigenvalue decays as
``ridge * gamma^n`` and ``A^{-1}`` grows as ``gamma^{-n}`` until it overflows
(``gamma = 0.99`` overflows float64 after about 70,000 updates, and a feature
that is always 0 then turns scores into NaN). Restoring the prior on one
coordinate per update, in turn, keeps it bounded: the data-free part of ``A``
stays diagonal, between ``ridge * gamma^(d-1)`` and ``2 * ridge`` on every
coordinate, and settles to a cycle that peaks at exactly ``ridge`` right after
each coordinate's restore. Each step is a scaling or a rank-one change, so
``A^{-1}`` is still maintained by Sherman-Morrison with no re-inversion (two
rank-one steps instead of one). The update is a deterministic function of the
arm's previous state, its update count and the event, so replaying the same
rewards in the same order with the same ``discount`` rebuilds the same state.

Caveat: the memory counts the arm's updates, not time. An arm that stops being
chosen also stops forgetting, so a stale, low estimate of it can persist after
a drift until exploration (a UCB width, a posterior draw or the epsilon floor)
picks it again; and the Beta counts of ``beta_ts`` are discounted the same way.

References
----------
.. [1] L. Li, W. Chu, J. Langford, R. E. Schapire. "A contextual-bandit approach
   to personalized news article recommendation." WWW 2010.
.. [2] Y. Russac, C. Vernade, O. Cappe. "Weighted linear bandits for
   non-stationary environments." NeurIPS 2019 (discounted LinUCB).
.. [3] J. Sherman, W. J. Morrison. "Adjustment of an inverse matrix corresponding
   to a change in one element of a given matrix." Ann. Math. Stat. 21(1), 1950.
"""

from __future__ import annotations

import math

import numpy as np

from .auto_forgetting import AUTO, BASE, auto_discounts
from .state import LearningState

__all__ = ["update", "rescale", "MAX_LEVERAGE", "UnlearnableReward", "check_leverage"]

# The most x^T A^{-1} x one update may bring. The rank-one step subtracts
# u u^T / (1 + x^T u) from A^{-1}, and when x^T u is this large the subtraction
# cancels A^{-1} in x's direction down to its last digits: about 12 of float64's
# 16 are lost at 1e12, all of them at 1e16, where a second such reward divides by
# zero and the arm's model turns NaN. Features that large (relative to the ridge
# prior and to what the arm has seen) need scaling; such a reward is refused.
MAX_LEVERAGE = 1e12


class UnlearnableReward(ValueError):
    """A reward whose features are too large for its arm's model: learning it would break it."""


def check_leverage(leverage: float) -> None:
    """Refuse an update whose ``x^T A^{-1} x`` is ``leverage`` if it would break the model.

    Raises
    ------
    UnlearnableReward
        If ``leverage`` is above :data:`MAX_LEVERAGE`, negative beyond rounding
        (the model has lost precision already) or NaN.
    """
    if not -0.5 < leverage <= MAX_LEVERAGE:
        raise UnlearnableReward(
            f"x is too large for the arm's model: x^T A^-1 x = {leverage:.3g}, at most "
            f"{MAX_LEVERAGE:g}; learning it would cancel the model's precision away "
            "(scale the features)"
        )


def update(
    state: LearningState,
    arm: int,
    x: np.ndarray,
    reward: float,
    *,
    success: float | None = None,
    discount: float | str = 1.0,
    ridge: float = 1.0,
    reward_range: tuple[float, float] = (0.0, 1.0),
    level: int = 0,
    auto_base: float = BASE,
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
    discount : float or "auto", default 1.0
        Forgetting factor ``gamma`` in (0, 1]: the arm's statistics are
        multiplied by it before this reward is added, with the ridge prior
        restored on one coordinate (module docstring). 1.0 forgets nothing and
        is exactly the undiscounted update. ``"auto"`` lets the arm choose
        (:mod:`bandits.auto_forgetting`).
    ridge : float, default 1.0
        The ridge prior ``lambda`` the state was built with; used only when
        ``discount < 1``, to restore the prior.
    reward_range : (float, float), default (0, 1)
        The rewards' ``(min, max)``, which ``success`` rescales from; used
        only with ``AUTO``.
    level : int, default 0
        The column of ``x`` that is 1 in every vector (the intercept), from
        which ``AUTO`` reads the arm's mean reward; used only with ``AUTO``.
    auto_base : float, default BASE
        ``AUTO``'s discount while nothing moves: 1.0 for a shared item model
        (:mod:`bandits.auto_forgetting`).

    Raises
    ------
    ValueError
        If ``arm`` is out of range, ``x`` has the wrong shape or is not finite,
        ``reward`` is not finite, ``success`` is outside [0, 1], ``discount``
        is outside (0, 1] or ``ridge`` is not positive and finite; or if ``x``
        is too large for the arm's model (:func:`check_leverage`), in which
        case the arm's discount for this update may have been applied already.

    Examples
    --------
    >>> import numpy as np
    >>> from bandits.state import prior
    >>> s = prior(2, 2)
    >>> update(s, 1, np.array([1.0, 2.0]), 0.5)
    >>> s.n.tolist(), s.theta[0].tolist(), s.successes.tolist()
    ([0.0, 1.0], [0.0, 0.0], [0.0, 0.5])

    With forgetting, the earlier reward weighs ``discount`` in ``b``:

    >>> update(s, 1, np.array([1.0, 2.0]), 1.0, discount=0.5)
    >>> s.b[1].tolist(), float(s.successes[1])
    ([1.25, 2.5], 1.25)
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
    auto = isinstance(discount, str) and discount == AUTO
    if not (auto or 0.0 < discount <= 1.0):
        raise ValueError(f'discount must be in (0, 1] or "auto", got {discount!r}')
    if auto or discount < 1.0:
        if not (math.isfinite(ridge) and ridge > 0):
            raise ValueError(f"ridge must be a positive finite number, got {ridge!r}")
        counts = None
        if auto:
            discount, counts = auto_discounts(
                state, arm, ridge, *reward_range, level=level, base=auto_base
            )
        _discount(state, arm, discount, ridge, counts)

    A_inv = state.A_inv[arm]  # views: writing through them updates the state
    u = A_inv @ x  # A_inv is symmetric, so x^T A_inv = u^T
    leverage = x @ u
    check_leverage(float(leverage))
    # u u^T (np.outer without its wrapper) keeps A_inv exactly symmetric
    A_inv -= u[:, None] * u / (1.0 + leverage)
    state.A[arm] += x[:, None] * x
    state.b[arm] += reward * x
    state.theta[arm] = A_inv @ state.b[arm]
    state.n[arm] += 1.0
    state.successes[arm] += success
    state.failures[arm] += 1.0 - success


def _discount(
    state: LearningState, arm: int, gamma: float, ridge: float, counts: float | None = None
) -> None:
    """Scale one arm's statistics by ``gamma`` (its Beta counts by ``counts`` if given)
    and restore the prior on one coordinate."""
    dim = state.theta.shape[1]
    state.successes[arm] *= gamma if counts is None else counts
    state.failures[arm] *= gamma if counts is None else counts
    if gamma == 1.0:
        return
    state.A[arm] *= gamma
    state.A_inv[arm] /= gamma
    state.b[arm] *= gamma
    if dim == 0:
        return
    j = int(state.n[arm]) % dim
    c = ridge * (1.0 - gamma**dim)
    A_inv = state.A_inv[arm]
    u = A_inv[:, j].copy()  # A_inv e_j
    A_inv -= (c / (1.0 + c * u[j])) * (u[:, None] * u)
    state.A[arm, j, j] += c
    # theta is recomputed by the caller once the new reward is in b


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
