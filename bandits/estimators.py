"""The policies as estimators in the scikit-learn manner, over the functions the service runs.

Each class holds its hyperparameters, a :class:`~bandits.state.LearningState`
created by the first :meth:`~BanditEstimator.partial_fit`, and a random
generator seeded by ``random_state``. Learning is
:func:`bandits.batch_learning.update_many` (the worker's own update), choosing
is :func:`bandits.select` (what ``/choose`` calls) and the probabilities are
those of the off-policy estimators (:func:`bandits.ope.target_probabilities`):
a notebook, a batch job and the service compute the same numbers.

Arms are indices ``0 .. n_arms - 1``; ``X`` holds encoded contexts (a
:class:`~bandits.features.FeatureSpec` encodes a request's context).

>>> import numpy as np
>>> X = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
>>> model = LinUCB(n_arms=2, alpha=0.0).fit(X, [0, 1, 1, 0], [1.0, 1.0, 0.0, 0.0])
>>> model.predict(np.array([[1.0, 0.0], [1.0, 1.0]])).tolist()
[0, 1]
>>> model.predict_proba(np.array([[1.0, 0.0]])).tolist()
[[1.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import POLICIES, ope, select
from .batch_learning import update_many
from .batch_selection import Selections, select_many
from .features import FeatureSpec
from .policy import PolicyParams, Selection
from .state import LearningState, prior

__all__ = ["BanditEstimator", "LinUCB", "LinearTS", "BetaTS", "SquareCB", "estimator_for"]


class BanditEstimator:
    """A policy and its learned state, with the estimator methods.

    Parameters
    ----------
    n_arms : int
        Number of arms ``K``.
    ridge : float, default 1.0
        Ridge prior ``lambda`` of every arm's linear model.
    forgetting : float, default 1.0
        Discount applied to an arm's statistics before each of its rewards, in (0, 1].
    random_state : int or numpy Generator, optional
        Seeds the exploration and tie-breaks.
    params : PolicyParams
        The policy's knobs (the subclasses take them by name).
    """

    policy = ""

    def __init__(
        self,
        n_arms: int,
        *,
        ridge: float = 1.0,
        forgetting: float = 1.0,
        random_state: int | np.random.Generator | None = None,
        params: PolicyParams | None = None,
    ) -> None:
        if n_arms < 1:
            raise ValueError(f"n_arms must be at least 1, got {n_arms}")
        self.n_arms = n_arms
        self.ridge = ridge
        self.forgetting = forgetting
        self.random_state = random_state
        self.params = params or PolicyParams()
        self.rng = np.random.default_rng(random_state)
        self.state: LearningState | None = None
        # set when loaded from the service (app/score/model.py): the context encoding and arm ids
        self.features: FeatureSpec | None = None
        self.arm_ids: tuple[str, ...] | None = None

    def partial_fit(
        self, X: np.ndarray, arms: Sequence[int], rewards: Sequence[float]
    ) -> "BanditEstimator":
        """Learn the rewards ``rewards`` of arms ``arms`` shown at contexts ``X``, in order."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if self.state is None:
            self.state = prior(self.n_arms, X.shape[1], self.ridge)
        rewards = np.asarray(rewards, dtype=np.float64)
        discounts = None if self.forgetting == 1.0 else np.full(len(rewards), self.forgetting)
        ridges = None if discounts is None else np.full(len(rewards), self.ridge)
        update_many(
            self.state,
            np.asarray(arms, dtype=np.intp),
            X,
            rewards,
            discounts=discounts,
            ridges=ridges,
        )
        return self

    def fit(
        self, X: np.ndarray, arms: Sequence[int], rewards: Sequence[float]
    ) -> "BanditEstimator":
        """Forget everything, then :meth:`partial_fit`."""
        self.state = None
        return self.partial_fit(X, arms, rewards)

    def choose(
        self, x: np.ndarray, k: int = 1, candidates: Sequence[int] | None = None
    ) -> Selection:
        """The ranked slate of one context, scores and propensities included, as /choose ranks."""
        cand = None if candidates is None else np.asarray(candidates, dtype=np.intp)
        return select(
            self.policy,
            self._fitted(len(x)),
            np.asarray(x, dtype=np.float64),
            self.rng,
            self.params,
            k=k,
            candidates=cand,
        )

    def choose_many(
        self, X: np.ndarray, k: int = 1, candidates: Sequence[int] | None = None
    ) -> Selections:
        """The slates of every row of ``X`` at once, vectorised where the policy allows."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        cand = None if candidates is None else np.asarray(candidates, dtype=np.intp)
        return select_many(
            self.policy, self._fitted(X.shape[1]), X, self.rng, self.params, k=k, candidates=cand
        )

    def rank(self, X: np.ndarray, k: int, candidates: Sequence[int] | None = None) -> np.ndarray:
        """``(n, k)`` arms, best first, for each row of ``X``."""
        return self.choose_many(X, k, candidates).arms

    def predict(self, X: np.ndarray, candidates: Sequence[int] | None = None) -> np.ndarray:
        """``(n,)`` the arm chosen for each row of ``X``."""
        return self.rank(X, 1, candidates)[:, 0]

    def predict_proba(self, X: np.ndarray, candidates: Sequence[int] | None = None) -> np.ndarray:
        """``(n, K)`` each arm's probability of being chosen first at each row of ``X``.

        Exact for ``linucb`` and ``squarecb``; for the sampling policies the
        quadrature the off-policy estimators use.
        """
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        allowed = None
        if candidates is not None:
            allowed = np.zeros((X.shape[0], self.n_arms), dtype=bool)
            allowed[:, np.asarray(candidates, dtype=np.intp)] = True
        return ope.target_probabilities(
            self.policy,
            self._fitted(X.shape[1]),
            X,
            self.params,
            self.rng,
            exact=True,
            candidates=allowed,
        )

    def _fitted(self, dim: int) -> LearningState:
        if self.state is None:  # nothing learned yet: every arm at its prior
            self.state = prior(self.n_arms, dim, self.ridge)
        return self.state


class LinUCB(BanditEstimator):
    """LinUCB (``policy = "linucb"``): ``alpha`` the confidence width, ``epsilon`` the floor."""

    policy = "linucb"

    def __init__(self, n_arms: int, *, alpha: float = 1.0, epsilon: float = 0.0, **options):
        super().__init__(n_arms, params=PolicyParams(alpha=alpha, epsilon=epsilon), **options)


class LinearTS(BanditEstimator):
    """Linear Thompson sampling (``policy = "lin_ts"``): ``v`` scales the posterior."""

    policy = "lin_ts"

    def __init__(
        self, n_arms: int, *, v: float = 1.0, epsilon: float = 0.0, draws: int = 1000, **options
    ):
        params = PolicyParams(v=v, epsilon=epsilon, draws=draws)
        super().__init__(n_arms, params=params, **options)


class BetaTS(BanditEstimator):
    """Beta-Bernoulli Thompson sampling (``policy = "beta_ts"``) on each arm's reward counts."""

    policy = "beta_ts"

    def __init__(self, n_arms: int, *, epsilon: float = 0.0, draws: int = 1000, **options):
        super().__init__(n_arms, params=PolicyParams(epsilon=epsilon, draws=draws), **options)


class SquareCB(BanditEstimator):
    """Inverse-gap weighting (``policy = "squarecb"``), greediness ``gamma_scale * t**exponent``.

    ``t`` is the number of rewards learned (:class:`~bandits.policy.PolicyParams`).
    """

    policy = "squarecb"

    def __init__(
        self,
        n_arms: int,
        *,
        gamma_scale: float = 10.0,
        gamma_exponent: float = 0.5,
        epsilon: float = 0.0,
        **options,
    ):
        params = PolicyParams(
            gamma_scale=gamma_scale, gamma_exponent=gamma_exponent, epsilon=epsilon
        )
        super().__init__(n_arms, params=params, **options)


ESTIMATORS: dict[str, type[BanditEstimator]] = {
    "linucb": LinUCB,
    "lin_ts": LinearTS,
    "beta_ts": BetaTS,
    "squarecb": SquareCB,
}


def estimator_for(policy: str, n_arms: int, params: PolicyParams, **options) -> BanditEstimator:
    """An unfitted estimator of ``policy`` (any of :data:`bandits.POLICIES`) with ``params``.

    ``options`` are :class:`BanditEstimator`'s (``ridge``, ``forgetting``, ``random_state``).

    >>> estimator_for("linucb", 3, PolicyParams(alpha=0.5)).params.alpha
    0.5
    """
    cls = ESTIMATORS.get(policy)
    if cls is None:  # epsilon_greedy, random: the base class runs any registered policy
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        model = BanditEstimator(n_arms, params=params, **options)
        model.policy = policy
        return model
    model = cls(n_arms, **options)
    model.params = params
    return model
