"""Checks of off-policy evaluation on simulated logs where the truth is known.

:func:`coverage` logs decisions of a frozen logging policy on a fixed
synthetic problem, many times over, and counts how often each estimator's
interval covers the target policy's true value. :func:`ts_propensity_error`
compares the propensities that ``lin_ts`` logs (by its own quadrature) with the
reference quadrature of :func:`~bandits.ope.gaussian_top_probabilities`.

The problem: :class:`~.environments.SyntheticLinear` arms drawn once from
``problem_seed``, and one model (a :class:`~bandits.LearningState`) learned
from ``warmup`` uniformly random rounds of it. Logging and target policies
share that model and differ in policy and knobs, which is exactly the question
``banditd evaluate --set`` answers ("the same parameters, but alpha=0.3").
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import select
from ..ope import (
    BanditLog,
    evaluate,
    gaussian_top_probabilities,
    replay,
    ridge_predictions,
    target_probabilities,
)
from ..policy import PolicyParams
from ..state import LearningState
from .environments import SyntheticLinear

__all__ = [
    "Problem",
    "Target",
    "problem",
    "coverage",
    "ts_propensity_error",
    "TARGETS",
    "LOGGING",
]


@dataclass(frozen=True)
class Target:
    """A policy to evaluate: a name, the policy and its knobs."""

    name: str
    policy: str
    params: PolicyParams


TARGETS = (
    Target("linucb α=0.3", "linucb", PolicyParams(alpha=0.3)),
    Target("epsilon_greedy ε=0.1", "epsilon_greedy", PolicyParams(epsilon=0.1)),
    Target("lin_ts v=0.1", "lin_ts", PolicyParams(v=0.1, draws=200)),
    Target("random", "random", PolicyParams()),
)


LOGGING = Target("lin_ts v=0.5 ε=0.05", "lin_ts", PolicyParams(v=0.5, epsilon=0.05))


@dataclass(frozen=True)
class Problem:
    """A fixed synthetic problem and the model both policies use."""

    env: SyntheticLinear
    rates: np.ndarray  # (K,) own click rates
    weights: np.ndarray  # (K, d) context weights
    model: LearningState

    def contexts(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` encoded contexts (intercept first) and their ``(n, K)`` click rates."""
        return _contexts(self.rates, self.weights, n, rng)


def _contexts(
    rates: np.ndarray, weights: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    z = rng.random((n, weights.shape[1]))
    return np.hstack([np.ones((n, 1)), z]), rates + z @ weights.T


def problem(problem_seed: int = 2024, warmup: int = 3000) -> Problem:
    """The fixed problem of the study (see the module docstring)."""
    env = SyntheticLinear()
    rng = np.random.default_rng(problem_seed)
    rates, weights = env.arms(rng)
    x, means = _contexts(rates, weights, warmup, rng)
    arms = rng.integers(env.n_arms, size=warmup)
    rewards = (rng.random(warmup) < means[np.arange(warmup), arms]).astype(float)
    return Problem(env, rates, weights, replay(x, arms, rewards, env.n_arms))


def true_value(p: Problem, target: Target, *, contexts: int = 4000, seed: int = 7) -> float:
    """The target's expected reward per decision, from many contexts and exact rates.

    Sampling policies' probabilities are Monte Carlo with 500 draws per
    context: unbiased, so their error averages out over the contexts (the
    total error is a few 1e-4, against interval widths of a few 1e-2).
    """
    rng = np.random.default_rng(seed)
    x, means = p.contexts(contexts, rng)
    params = dataclasses.replace(target.params, draws=500)
    probs = target_probabilities(target.policy, p.model, x, params, rng)
    return float(np.mean(np.sum(probs * means, axis=1)))


def log_decisions(
    p: Problem, logging: Target, n: int, rng: np.random.Generator
) -> tuple[BanditLog, np.ndarray]:
    """``n`` decisions of the logging policy via :func:`bandits.select`, logged as the service does.

    Returns the log and the ``(n, K)`` click rates (for the truth, not the estimators).
    """
    x, means = p.contexts(n, rng)
    arms = np.empty(n, dtype=np.intp)
    props = np.empty(n)
    for i in range(n):
        sel = select(logging.policy, p.model, x[i], rng, logging.params)
        arms[i], props[i] = sel.arms[0], sel.propensities[0]
    rewards = (rng.random(n) < means[np.arange(n), arms]).astype(float)
    return BanditLog(x, arms, props, rewards), means


def coverage(
    seeds: Sequence[int],
    *,
    n: int = 1000,
    logging: Target = LOGGING,
    targets: Sequence[Target] = TARGETS,
    level: float = 0.95,
    p: Problem | None = None,
) -> dict[str, dict[str, float]]:
    """How often each estimator's interval covers the truth, per target.

    Returns
    -------
    dict
        ``{target name: {"truth": v, "<est>": coverage, "<est>_width": mean
        interval width, "<est>_bias": mean error, "ess": mean ESS}}`` for
        ``est`` in ips, snips, dr.
    """
    p = p or problem()
    truths = {t.name: true_value(p, t) for t in targets}
    hits: dict[str, dict[str, list[float]]] = {t.name: {} for t in targets}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        log, _ = log_decisions(p, logging, n, rng)
        predicted = ridge_predictions(log, p.env.n_arms, rng=rng)
        for t in targets:
            probs = target_probabilities(t.policy, p.model, log.features, t.params, rng)
            row = hits[t.name]
            for est in evaluate(log, probs, predicted, level=level):
                row.setdefault(est.estimator, []).append(est.covers(truths[t.name]))
                row.setdefault(f"{est.estimator}_width", []).append(est.high - est.low)
                row.setdefault(f"{est.estimator}_bias", []).append(est.value - truths[t.name])
            row.setdefault("ess", []).append(est.ess)
    return {
        name: {"truth": truths[name], **{k: float(np.mean(v)) for k, v in row.items()}}
        for name, row in hits.items()
    }


def ts_propensity_error(
    draws: int, *, contexts: int = 2000, v: float = 0.5, seed: int = 11, p: Problem | None = None
) -> dict[str, float]:
    """Error of ``lin_ts``'s logged propensities against the reference quadrature.

    For each of ``contexts`` random contexts, :func:`bandits.select` picks an
    arm (epsilon 0, so nothing masks the error) and logs its propensity, by
    :func:`bandits.lin_ts.top_probability` (``draws`` only sets the
    ``0.5 / draws`` floor); the reference is
    :func:`~bandits.ope.gaussian_top_probabilities` of the same posterior.

    Returns
    -------
    dict
        ``mean_abs``: mean ``|p_hat - p|``; ``binomial_mean_abs``: what
        ``mean_abs`` would be for a Monte Carlo estimate from ``draws`` draws
        (binomial sampling error, for comparison); ``p50_rel``/``p99_rel``:
        median and 99th percentile of ``|p_hat / p - 1|``; ``weight_bias``:
        mean of ``p / p_hat - 1`` (the relative error of an IPS weight,
        averaged over logged decisions, so over the arms as the policy picks
        them); ``clipped``: share of propensities at the ``0.5 / draws`` floor.
    """
    p = p or problem()
    rng = np.random.default_rng(seed)
    params = PolicyParams(v=v, draws=draws)
    x, _ = p.contexts(contexts, rng)
    est = np.empty(contexts)
    ref = np.empty(contexts)
    binomial_sd = np.empty(contexts)
    for i in range(contexts):
        sel = select("lin_ts", p.model, x[i], rng, params)
        mean = p.model.theta @ x[i]
        sd = v * np.sqrt(np.maximum((p.model.A_inv @ x[i]) @ x[i], 0.0))
        est[i] = sel.propensities[0]
        ref[i] = gaussian_top_probabilities(mean, sd)[sel.arms[0]]
        binomial_sd[i] = np.sqrt(ref[i] * (1.0 - ref[i]) / draws)
    rel = np.abs(est / ref - 1.0)
    return {
        "draws": float(draws),
        "mean_abs": float(np.mean(np.abs(est - ref))),
        "binomial_mean_abs": float(np.sqrt(2.0 / np.pi) * np.mean(binomial_sd)),
        "p50_rel": float(np.median(rel)),
        "p99_rel": float(np.quantile(rel, 0.99)),
        "weight_bias": float(np.mean(ref / est - 1.0)),
        "clipped": float(np.mean(est <= 0.5 / draws + 1e-15)),
    }
