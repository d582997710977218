"""Forgetting that tunes itself: a long memory, and fast forgetting when an arm's rewards change.

``forgetting = "auto"`` (``discount="auto"`` in :func:`bandits.update`) runs a
two-window change detector per arm, on statistics the arm already keeps, so
it needs no state beyond :class:`~bandits.LearningState` (nothing new to
store, load, snapshot or compare, and ``banditd rebuild`` replays it like
any other update):

- the *recent* window is the arm's Beta counts: in auto mode they are
  discounted by ``RECENT = 0.99`` at every update of the arm (memory about
  100 of its updates), so ``successes / (successes + failures)`` is the
  arm's recent mean reward (rescaled to [0, 1]) and ``successes + failures``
  its weight ``m_r``;
- the *long* window is the arm's linear model itself: with the intercept in
  column ``level`` (0 for a per-arm model), ``b[level] / A[level, level]`` is
  its mean reward over everything it still remembers (the ridge prior aside)
  and ``A[level, level] - ridge`` its weight ``m_l``.

Before each update the detector computes ``z = (recent - long) /
sqrt(v (1/m_r + 1/m_l))`` with ``v = p (1 - p)`` at their mean ``p`` (the
variance of a [0, 1] reward of that mean is at most that). While ``|z| >
THRESHOLD = 3`` the arm's model is discounted by ``DROP = 0.95`` per update
(with the ridge prior restored on one coordinate, :mod:`bandits.learning`);
otherwise by ``BASE = 0.999``, a memory of about 1,000 of the arm's updates.
After a change the arm forgets quickly until its model's level has caught up
with its recent rewards, at which point the detector stops firing by itself;
while nothing changes it keeps a long memory.

Why ``BASE`` is not 1: at click rates near 10%, a shift of an arm's mean by
2-3 points needs over 1,500 of its rewards to show at ``|z| > 3``, later than
a fixed factor already follows it (docs/LEARNING.md, "Automatic forgetting",
has the figures of the detector alone). The long base memory catches such
slow, small drifts at a cost of about 1% where nothing drifts; the detector
catches large changes within tens of updates. A graded discount, ``BASE **
(1 + 2 z^2)``, which follows small changes too, was measured and not kept:
it won on some worlds and lost on others, and cost up to 1% on ``digits``
(docs/LEARNING.md, "Automatic forgetting").

Cost per update: a few scalar operations, and the discount of fixed
forgetting (a scaling and one extra Sherman-Morrison step). Deterministic: a
function of the arm's state and the event, so the same rewards in the same
order give the same state, bit for bit.

Caveats: it reads the arm's *mean* reward, so a change that keeps an arm's
mean over its chosen contexts is not seen; the long mean needs the intercept
(``features.intercept = true``, the default); and, as with a fixed factor, an
arm that is no longer chosen is not updated, so it neither detects nor
forgets until exploration picks it again. The Beta counts of ``beta_ts``
then forget at ``RECENT`` (their memory is the recent window).

Item models: a shared model is one model of the whole experiment, learning
from every reward and with many more features, so it keeps everything
(``base = 1``) until its level column
(:attr:`~bandits.item_layout.ItemLayout.level_column`) shows a clear change;
a base of 0.999 per update would leave it a memory of 1,000 rewards for
hundreds of parameters. A hybrid model's per-item part watches its item as a
per-arm model does, and its shared part (learned from residuals, which have
no level to watch) keeps everything (:func:`bandits.item_models.hybrid_update`).

References
----------
.. [1] A. Bifet, R. Gavalda. "Learning from time-changing data with adaptive
   windowing." SDM 2007 (two windows whose means differ significantly).
.. [2] Y. Russac, C. Vernade, O. Cappe. "Weighted linear bandits for
   non-stationary environments." NeurIPS 2019 (discounted LinUCB).
"""

from __future__ import annotations

import math

from .state import LearningState

__all__ = ["AUTO", "BASE", "RECENT", "THRESHOLD", "DROP", "auto_discounts", "change_score"]

AUTO = "auto"  # the discount that lets each arm choose
RECENT = 0.99  # per-update discount of the Beta counts, the recent window
THRESHOLD = 3.0  # |z| above which the arm's model is discounted
DROP = 0.95  # the model's discount per update while the detector fires
BASE = 0.999  # the model's discount per update otherwise


def change_score(
    state: LearningState, arm: int, ridge: float, low: float, high: float, level: int = 0
) -> float:
    """``z``: how many standard errors the arm's recent mean reward is from its model's.

    Parameters
    ----------
    state : LearningState
        The state, with the intercept in feature column 0.
    arm : int
        The arm about to learn a reward.
    ridge : float
        The ridge prior (the weight of ``A[0, 0]`` that is not data).
    low, high : float
        The reward range that the Beta counts rescale to [0, 1].
    level : int, default 0
        The feature column that is 1 in every vector (the intercept): its
        ``b / A`` is the model's mean reward. Column 0 for a per-arm model;
        a shared item model's is :attr:`~bandits.item_layout.ItemLayout.level_column`.

    Returns
    -------
    float
        0.0 while either window holds less than 2 rewards' weight.
    """
    recent_weight = float(state.successes[arm] + state.failures[arm])
    long_weight = float(state.A[arm, level, level]) - ridge
    if recent_weight < 2.0 or long_weight < 2.0:
        return 0.0
    recent = float(state.successes[arm]) / recent_weight
    mean = float(state.b[arm, level]) / float(state.A[arm, level, level])
    long = min(max((mean - low) / (high - low), 0.0), 1.0)
    p = min(max(0.5 * (recent + long), 0.01), 0.99)
    return (recent - long) / math.sqrt(p * (1.0 - p) * (1.0 / recent_weight + 1.0 / long_weight))


def auto_discounts(
    state: LearningState,
    arm: int,
    ridge: float,
    low: float = 0.0,
    high: float = 1.0,
    level: int = 0,
    base: float = BASE,
) -> tuple[float, float]:
    """The discounts of the arm's model and of its Beta counts for its next update.

    Parameters
    ----------
    state, arm, ridge, low, high, level
        As for :func:`change_score`.
    base : float, default BASE
        The discount while nothing is detected (1 for a shared item model).

    Returns
    -------
    model : float
        ``DROP`` if ``|change_score| > THRESHOLD``, else ``base``.
    counts : float
        ``RECENT``.

    Examples
    --------
    An arm that paid 0.2 for 2,000 updates and then 0.8: the detector fires
    once the recent window has seen enough of the new rewards.

    >>> import numpy as np
    >>> from bandits import prior, update
    >>> s = prior(1, 1)
    >>> for _ in range(2000):
    ...     update(s, 0, np.ones(1), 0.2, discount=AUTO)
    >>> auto_discounts(s, 0, 1.0)
    (0.999, 0.99)
    >>> for _ in range(40):
    ...     update(s, 0, np.ones(1), 0.8, discount=AUTO)
    >>> auto_discounts(s, 0, 1.0)
    (0.95, 0.99)
    """
    fires = abs(change_score(state, arm, ridge, low, high, level)) > THRESHOLD
    return (DROP if fires else base), RECENT
