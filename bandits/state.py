"""Per-arm model state of the disjoint linear bandit, arm axis first.

Each arm ``a`` keeps the ridge-regression statistics of the disjoint LinUCB
model of Li et al. (2010): ``A_a = ridge * I + sum x x^T`` and
``b_a = sum r x``, together with what choosing needs precomputed
(``A_a^{-1}`` and ``theta_a = A_a^{-1} b_a``) and the Beta-Bernoulli counts
used by Thompson sampling without context.

:class:`ScoringState` is what a policy's ``select`` reads; :class:`LearningState`
adds ``A`` and ``b``, which only :func:`bandits.learning.update` needs.

References
----------
.. [1] L. Li, W. Chu, J. Langford, R. E. Schapire. "A contextual-bandit approach
   to personalized news article recommendation." WWW 2010.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ScoringState", "LearningState", "prior", "arm_prior"]


@dataclass
class ScoringState:
    """What choosing needs, per arm, arm axis first.

    Attributes
    ----------
    A_inv : np.ndarray
        ``(K, d, d)`` inverse of ``A = ridge * I + sum x x^T``.
    theta : np.ndarray
        ``(K, d)`` ridge estimate ``A_inv @ b``.
    n : np.ndarray
        ``(K,)`` float64, number of rewards learned from.
    successes : np.ndarray
        ``(K,)`` float64, sum of rewards rescaled to [0, 1]
        (Beta posterior ``alpha - 1``).
    failures : np.ndarray
        ``(K,)`` float64, sum of ``1 - rescaled reward``
        (Beta posterior ``beta - 1``).
    """

    A_inv: np.ndarray
    theta: np.ndarray
    n: np.ndarray
    successes: np.ndarray
    failures: np.ndarray

    @property
    def n_arms(self) -> int:
        """Number of arms ``K``."""
        return self.theta.shape[0]

    @property
    def dim(self) -> int:
        """Number of features ``d``."""
        return self.theta.shape[1]


@dataclass
class LearningState(ScoringState):
    """A :class:`ScoringState` plus what learning needs.

    Attributes
    ----------
    A : np.ndarray
        ``(K, d, d)`` design matrix ``ridge * I + sum x x^T``.
    b : np.ndarray
        ``(K, d)`` reward-weighted sum of contexts ``sum r x``.
    """

    A: np.ndarray
    b: np.ndarray


def prior(n_arms: int, dim: int, ridge: float = 1.0) -> LearningState:
    """Return the state of ``n_arms`` arms that have learned nothing yet.

    Parameters
    ----------
    n_arms : int
        Number of arms ``K`` (>= 0).
    dim : int
        Number of features ``d`` (>= 0).
    ridge : float, default 1.0
        Ridge penalty ``lambda > 0``; ``A`` starts at ``lambda * I``.

    Returns
    -------
    LearningState
        ``A = ridge * I``, ``A_inv = I / ridge``, ``b = theta = 0`` and
        ``n = successes = failures = 0``, all float64 and writeable.

    Raises
    ------
    ValueError
        If ``n_arms`` or ``dim`` is negative or ``ridge`` is not a positive
        finite number.

    Examples
    --------
    >>> s = prior(3, 2, ridge=2.0)
    >>> s.A.shape, s.A_inv[0].tolist()
    ((3, 2, 2), [[0.5, 0.0], [0.0, 0.5]])
    """
    if n_arms < 0 or dim < 0:
        raise ValueError(f"n_arms and dim must be >= 0, got {n_arms} and {dim}")
    if not (np.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be a positive finite number, got {ridge!r}")
    eye = np.eye(dim)
    return LearningState(
        A_inv=np.tile(eye / ridge, (n_arms, 1, 1)),
        theta=np.zeros((n_arms, dim)),
        n=np.zeros(n_arms),
        successes=np.zeros(n_arms),
        failures=np.zeros(n_arms),
        A=np.tile(eye * ridge, (n_arms, 1, 1)),
        b=np.zeros((n_arms, dim)),
    )


def arm_prior(dim: int, ridge: float = 1.0) -> LearningState:
    """Return the prior state of a single arm (``K = 1``).

    Parameters
    ----------
    dim : int
        Number of features ``d``.
    ridge : float, default 1.0
        Ridge penalty, as in :func:`prior`.

    Returns
    -------
    LearningState
        ``prior(1, dim, ridge)``; its arrays keep the leading arm axis of length 1.
    """
    return prior(1, dim, ridge)
