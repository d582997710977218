"""Learning a batch of rewards at once: :func:`bandits.learning.update`, vectorised.

Rewards of different arms touch different rows of the state, so only the order
of each arm's own rewards matters. :func:`update_many` learns the first reward
of every arm in the batch in one vectorised step, then the second of every arm,
and so on. Each step performs, row by row, exactly the floating-point
operations of :func:`~bandits.learning.update` (the same products, the same
matrix-vector products through the same BLAS routines), so the result is the
state that learning the rewards one at a time would give, bit for bit: a
replay that learns them one at a time (``banditd rebuild``) reproduces what a
batch learned. tests/test_batch_learning.py holds it to that.

A step over few arms costs more than that many single updates, so steps of
fewer than ``MIN_VECTOR_ARMS`` arms use :func:`~bandits.learning.update` itself.
"""

from __future__ import annotations

import numpy as np

from .learning import MAX_LEVERAGE, check_leverage, update
from .state import LearningState

__all__ = ["update_many"]

MIN_VECTOR_ARMS = 4


def update_many(
    state: LearningState,
    arms: np.ndarray,
    X: np.ndarray,
    rewards: np.ndarray,
    *,
    successes: np.ndarray | None = None,
    discounts: np.ndarray | None = None,
    ridges: np.ndarray | None = None,
) -> None:
    """Learn ``m`` rewards in order, in place, as ``m`` calls of :func:`~bandits.learning.update`.

    Parameters
    ----------
    state : LearningState
        The state to change.
    arms : np.ndarray
        ``(m,)`` integer index of each reward's arm on the state's arm axis.
    X : np.ndarray
        ``(m, d)`` the context each reward's arm was chosen for.
    rewards : np.ndarray
        ``(m,)`` the observed rewards (finite).
    successes : np.ndarray, optional
        ``(m,)`` the rewards rescaled to [0, 1] for the Beta counts; defaults
        to ``clip(rewards, 0, 1)``.
    discounts : np.ndarray, optional
        ``(m,)`` forgetting factor of each reward, in (0, 1]; defaults to 1.
    ridges : np.ndarray, optional
        ``(m,)`` ridge prior of each reward, used where its discount is below
        1; defaults to 1.

    Raises
    ------
    ValueError
        For any input :func:`~bandits.learning.update` would reject, before
        anything is changed; except a reward too large for its arm's model
        (:class:`~bandits.learning.UnlearnableReward`), found when its step
        comes: the state is then partly updated (the earlier steps, and the
        discounts of its own, whatever their place in the batch) and is to be
        thrown away; the worker learns on a copy.

    Examples
    --------
    >>> import numpy as np
    >>> from bandits.state import prior
    >>> s = prior(2, 2)
    >>> update_many(s, np.array([1, 0, 1]), np.eye(2)[[0, 1, 1]], np.array([1.0, 0.5, 0.0]))
    >>> s.n.tolist(), s.b.tolist()
    ([1.0, 2.0], [[0.0, 0.5], [1.0, 0.0]])
    """
    arms, X, rewards, successes, discounts, ridges = _checked(
        state, arms, X, rewards, successes, discounts, ridges
    )
    for rows in _steps(arms):
        if len(rows) < MIN_VECTOR_ARMS:
            for i in rows.tolist():
                update(
                    state,
                    int(arms[i]),
                    X[i],
                    float(rewards[i]),
                    success=float(successes[i]),
                    discount=float(discounts[i]),
                    ridge=float(ridges[i]),
                )
            continue
        idx = arms[rows]
        forgetting = rows[discounts[rows] < 1.0]
        if len(forgetting):
            _discount(state, arms[forgetting], discounts[forgetting], ridges[forgetting])
        _learn(state, idx, X[rows], rewards[rows], successes[rows])


def _checked(state, arms, X, rewards, successes, discounts, ridges):
    n_arms, dim = state.theta.shape
    arms = np.asarray(arms)
    if arms.size and not np.issubdtype(arms.dtype, np.integer):
        raise ValueError(f"arms must be integer indices, got {arms.dtype}")
    arms = arms.astype(np.intp)
    X = np.asarray(X, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64)
    m = len(arms)
    if arms.shape != (m,) or X.shape != (m, dim) or rewards.shape != (m,):
        raise ValueError(f"need arms (m,), X (m, {dim}) and rewards (m,); got {X.shape} for X")
    if m and not (0 <= arms.min() and arms.max() < n_arms):
        raise ValueError(f"an arm is out of range for {n_arms} arms")
    if not np.isfinite(X).all():
        raise ValueError("X must be finite")
    if not np.isfinite(rewards).all():
        raise ValueError("rewards must be finite")
    if successes is None:
        successes = np.clip(rewards, 0.0, 1.0)
    successes = np.asarray(successes, dtype=np.float64)
    if successes.shape != (m,) or not ((successes >= 0.0) & (successes <= 1.0)).all():
        raise ValueError("successes must be in [0, 1], one per reward")
    discounts = np.ones(m) if discounts is None else np.asarray(discounts, dtype=np.float64)
    if discounts.shape != (m,) or not ((discounts > 0.0) & (discounts <= 1.0)).all():
        raise ValueError("discounts must be in (0, 1], one per reward")
    ridges = np.ones(m) if ridges is None else np.asarray(ridges, dtype=np.float64)
    if ridges.shape != (m,):
        raise ValueError("need one ridge per reward")
    used = ridges[discounts < 1.0]
    if not (np.isfinite(used) & (used > 0)).all():
        raise ValueError("ridge must be a positive finite number where a discount applies")
    return arms, X, rewards, successes, discounts, ridges


def _steps(arms: np.ndarray) -> list[np.ndarray]:
    """Reward indices grouped by occurrence: every arm's 1st reward, then every 2nd, ..."""
    seen: dict[int, int] = {}
    occurrence = np.empty(len(arms), dtype=np.intp)
    for i, arm in enumerate(arms.tolist()):
        occurrence[i] = seen.get(arm, 0)
        seen[arm] = occurrence[i] + 1
    order = np.argsort(occurrence, kind="stable")
    bounds = np.searchsorted(occurrence[order], np.arange(1, max(seen.values(), default=0)))
    return np.split(order, bounds)


def _learn(state, idx, X, rewards, successes) -> None:
    """``update``'s rank-one step for distinct arms ``idx``, one reward each."""
    A_inv = state.A_inv[idx]
    u = np.matmul(A_inv, X[:, :, None])  # (k, d, 1): A_inv @ x per arm
    xu = np.matmul(X[:, None, :], u)  # (k, 1, 1): x @ u per arm
    ok = (xu > -0.5) & (xu <= MAX_LEVERAGE)
    if not ok.all():
        check_leverage(float(xu[~ok][0]))  # raises, naming the first such reward's
    u = u[:, :, 0]
    A_inv -= u[:, :, None] * u[:, None, :] / (1.0 + xu)
    state.A_inv[idx] = A_inv
    state.A[idx] += X[:, :, None] * X[:, None, :]
    b = state.b[idx] + rewards[:, None] * X
    state.b[idx] = b
    state.theta[idx] = np.matmul(A_inv, b[:, :, None])[:, :, 0]
    state.n[idx] += 1.0
    state.successes[idx] += successes
    state.failures[idx] += 1.0 - successes


def _discount(state, idx, gammas, ridges) -> None:
    """``learning._discount`` for distinct arms ``idx``."""
    dim = state.theta.shape[1]
    g = gammas[:, None, None]
    state.A[idx] *= g
    state.A_inv[idx] /= g
    state.b[idx] *= gammas[:, None]
    state.successes[idx] *= gammas
    state.failures[idx] *= gammas
    if dim == 0:
        return
    j = state.n[idx].astype(np.intp) % dim
    # the scalar ``ridge * (1 - gamma**dim)`` exactly as update computes it
    c = np.array([r * (1.0 - g_**dim) for r, g_ in zip(ridges.tolist(), gammas.tolist())])
    A_inv = state.A_inv[idx]
    rows = np.arange(len(idx))
    u = A_inv[rows, :, j]  # (k, d): column j of each arm's A_inv
    A_inv -= (c / (1.0 + c * u[rows, j]))[:, None, None] * (u[:, :, None] * u[:, None, :])
    state.A_inv[idx] = A_inv
    state.A[idx, j, j] += c
