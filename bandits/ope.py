"""Off-policy evaluation: what another policy would have earned, from a log.

A :class:`BanditLog` holds, for each logged decision, the context ``x_i``,
the arm ``a_i`` shown in slot 0, the logging policy's propensity ``mu_i`` of
that arm and the reward ``r_i``. A target policy is given by its action
probabilities ``pi(a | x_i)`` (:func:`target_probabilities` computes them with
the same scoring as the policies: :mod:`bandits.targets`, and
:mod:`bandits.squarecb` for ``squarecb``). With
weights ``w_i = pi(a_i | x_i) / mu_i``:

- IPS: ``mean(w_i r_i)``; unbiased when ``mu_i > 0`` wherever ``pi > 0``.
- SNIPS: ``sum(w_i r_i) / sum(w_i)``; slightly biased, much lower variance.
- DR: ``mean(sum_a pi(a|x_i) rhat(x_i, a) + w_i (r_i - rhat(x_i, a_i)))`` with a
  reward model ``rhat`` (:func:`ridge_predictions`); unbiased like IPS, with
  lower variance when ``rhat`` is good.

Confidence intervals are normal approximations: each estimate is a mean (or a
ratio of means) of independent per-decision terms, so ``value ± z * se`` with
the sample standard error (delta method for SNIPS). They are cheap and, with
a decent effective sample size, cover as advertised (docs/LEARNING.md measures
it); a small :attr:`Estimate.ess` is the warning sign that they may not.

References
----------
.. [1] D. G. Horvitz, D. J. Thompson. "A generalization of sampling without
   replacement from a finite universe." JASA 47, 1952 (IPS).
.. [2] A. Swaminathan, T. Joachims. "The self-normalized estimator for
   counterfactual learning." NeurIPS 2015 (SNIPS).
.. [3] M. Dudik, J. Langford, L. Li. "Doubly robust policy evaluation and
   learning." ICML 2011 (DR).
.. [4] A. Kong. "A note on importance sampling using standardized weights."
   Tech. report 348, U. Chicago, 1992 (effective sample size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from .learning import update
from .state import LearningState, prior
from . import squarecb, targets
from .policy import PolicyParams
from .state import ScoringState
from .targets import beta_top_probabilities, gaussian_top_probabilities

__all__ = [
    "BanditLog",
    "Estimate",
    "ips",
    "snips",
    "doubly_robust",
    "evaluate",
    "effective_sample_size",
    "importance_weights",
    "ridge_predictions",
    "target_probabilities",
    "gaussian_top_probabilities",
    "beta_top_probabilities",
    "replay",
]


@dataclass(frozen=True)
class BanditLog:
    """Logged decisions, slot 0 only.

    Attributes
    ----------
    features : np.ndarray
        ``(n, d)`` encoded contexts.
    arms : np.ndarray
        ``(n,)`` intp index of the arm shown in slot 0.
    propensities : np.ndarray
        ``(n,)`` the logging policy's probability of that arm, in (0, 1].
    rewards : np.ndarray
        ``(n,)`` its reward.
    """

    features: np.ndarray
    arms: np.ndarray
    propensities: np.ndarray
    rewards: np.ndarray

    def __post_init__(self) -> None:
        n = self.arms.shape[0]
        if (
            self.features.shape[0] != n
            or self.propensities.shape != (n,)
            or self.rewards.shape != (n,)
        ):
            raise ValueError("features, arms, propensities and rewards must have n rows each")
        if n and not ((self.propensities > 0) & (self.propensities <= 1)).all():
            raise ValueError("logged propensities must be in (0, 1]")

    @property
    def n(self) -> int:
        """Number of logged decisions."""
        return self.arms.shape[0]


@dataclass(frozen=True)
class Estimate:
    """A policy value estimate with its normal-approximation interval.

    Attributes
    ----------
    estimator : str
        ``"ips"``, ``"snips"`` or ``"dr"``.
    value : float
        Estimated mean reward per decision of the target policy.
    std_error : float
    low, high : float
        The ``level`` confidence interval.
    n : int
        Decisions used.
    ess : float
        Effective sample size of the importance weights.
    """

    estimator: str
    value: float
    std_error: float
    low: float
    high: float
    n: int
    ess: float

    def covers(self, truth: float) -> bool:
        """Whether the interval contains ``truth``."""
        return self.low <= truth <= self.high


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(special.ndtri(0.5 + level / 2.0))


def importance_weights(log: BanditLog, target: np.ndarray) -> np.ndarray:
    """``(n,)`` weights ``pi(a_i | x_i) / mu_i`` of the logged arms.

    Their mean estimates 1 whenever the log covers every arm the target might
    choose; a mean well below 1 says the target puts probability where the log
    (almost) never goes, which biases IPS and DR down.
    """
    if target.shape[0] != log.n:
        raise ValueError(f"target has {target.shape[0]} rows, the log {log.n}")
    return target[np.arange(log.n), log.arms] / log.propensities


def effective_sample_size(weights: np.ndarray) -> float:
    """``(sum w)^2 / sum w^2``: how many on-policy samples the weights are worth."""
    total = float(np.sum(weights**2))
    return float(np.sum(weights)) ** 2 / total if total > 0 else 0.0


def _mean_estimate(name: str, terms: np.ndarray, w: np.ndarray, level: float) -> Estimate:
    n = terms.size
    value = float(terms.mean()) if n else float("nan")
    se = float(terms.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    half = _z(level) * se
    return Estimate(name, value, se, value - half, value + half, n, effective_sample_size(w))


def ips(log: BanditLog, target: np.ndarray, *, level: float = 0.95) -> Estimate:
    """Inverse propensity scoring estimate of the target's value.

    Parameters
    ----------
    log : BanditLog
    target : np.ndarray
        ``(n, K)`` target action probabilities per logged context.
    level : float, default 0.95
        Confidence level of the interval.

    Returns
    -------
    Estimate
    """
    w = importance_weights(log, target)
    return _mean_estimate("ips", w * log.rewards, w, level)


def snips(log: BanditLog, target: np.ndarray, *, level: float = 0.95) -> Estimate:
    """Self-normalised IPS; the interval's standard error is the delta method's."""
    w = importance_weights(log, target)
    total = float(w.sum())
    if total <= 0:
        nan = float("nan")
        return Estimate("snips", nan, nan, nan, nan, log.n, 0.0)
    value = float(w @ log.rewards) / total
    se = float(np.sqrt(np.sum(w**2 * (log.rewards - value) ** 2)) / total)
    half = _z(level) * se
    return Estimate("snips", value, se, value - half, value + half, log.n, effective_sample_size(w))


def doubly_robust(
    log: BanditLog, target: np.ndarray, predicted: np.ndarray, *, level: float = 0.95
) -> Estimate:
    """Doubly robust estimate with reward model predictions ``predicted`` (``(n, K)``)."""
    w = importance_weights(log, target)
    rows = np.arange(log.n)
    direct = np.sum(target * predicted, axis=1)
    terms = direct + w * (log.rewards - predicted[rows, log.arms])
    return _mean_estimate("dr", terms, w, level)


def evaluate(
    log: BanditLog,
    target: np.ndarray,
    predicted: np.ndarray | None = None,
    *,
    level: float = 0.95,
) -> list[Estimate]:
    """IPS, SNIPS and (when ``predicted`` is given) DR estimates, in that order."""
    found = [ips(log, target, level=level), snips(log, target, level=level)]
    if predicted is not None:
        found.append(doubly_robust(log, target, predicted, level=level))
    return found


def ridge_predictions(
    log: BanditLog,
    n_arms: int,
    *,
    ridge: float = 1.0,
    folds: int = 2,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Cross-fitted per-arm ridge predictions of every arm's reward, for DR.

    The rows are split into ``folds`` random folds; each fold's predictions
    come from a disjoint ridge model per arm (``A = ridge I + X^T X``) fitted
    on the other folds, so no decision's own reward enters its prediction
    (which would bias DR towards the logged rewards).

    Returns
    -------
    np.ndarray
        ``(n, K)`` predicted reward of each arm at each logged context.
    """
    rng = rng or np.random.default_rng(0)
    n, d = log.features.shape
    folds = max(int(folds), 1)
    fold = rng.permutation(n) % folds
    out = np.zeros((n, n_arms))
    for f in range(folds):
        test = fold == f
        train = ~test if folds > 1 else test  # one fold: fit and predict on everything
        for a in range(n_arms):
            mask = train & (log.arms == a)
            X = log.features[mask]
            theta = np.linalg.solve(ridge * np.eye(d) + X.T @ X, X.T @ log.rewards[mask])
            out[test, a] = log.features[test] @ theta
    return out


def replay(
    features: np.ndarray,
    arms: np.ndarray,
    rewards: np.ndarray,
    n_arms: int,
    *,
    ridge: float = 1.0,
    successes: np.ndarray | None = None,
    discount: float = 1.0,
) -> LearningState:
    """The :class:`~bandits.LearningState` after learning these rewards in this order."""
    state = prior(n_arms, features.shape[1], ridge)
    for i in range(arms.shape[0]):
        success = None if successes is None else float(successes[i])
        update(
            state,
            int(arms[i]),
            features[i],
            float(rewards[i]),
            success=success,
            discount=discount,
            ridge=ridge,
        )
    return state


def target_probabilities(
    policy: str,
    state: ScoringState,
    features: np.ndarray,
    params: PolicyParams,
    rng: np.random.Generator,
    *,
    exact: bool = False,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Slot-0 probability of every arm at every context, for a frozen ``state``.

    :func:`bandits.targets.target_probabilities` (same arguments and result),
    plus ``squarecb``, whose probabilities are exact
    (:func:`bandits.squarecb.slot0_probabilities`).
    """
    if policy != "squarecb":
        return targets.target_probabilities(
            policy, state, features, params, rng, exact=exact, candidates=candidates
        )
    n, k = features.shape[0], state.n_arms
    allowed = np.ones((n, k), dtype=bool) if candidates is None else np.asarray(candidates, bool)
    if allowed.shape != (n, k):
        raise ValueError(f"candidates must have shape ({n}, {k}), got {allowed.shape}")
    return squarecb.slot0_probabilities(state, features, params, allowed)
