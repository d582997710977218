"""What a target policy would do with each logged context: its slot-0 probabilities.

:func:`target_probabilities` scores contexts like the policy modules do and
turns the scores into the probability of each arm coming first, exactly for
the deterministic policies and by Monte Carlo or quadrature for the sampling
ones (:func:`gaussian_top_probabilities`, :func:`beta_top_probabilities`).
Off-policy evaluation (:mod:`bandits.ope`) weighs logged rewards by them.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from .policy import PolicyParams
from .state import ScoringState

__all__ = ["target_probabilities", "gaussian_top_probabilities", "beta_top_probabilities"]

_CHUNK = 256  # contexts per vectorised block: bounds the (rows, draws, arms) arrays


def gaussian_top_probabilities(mean: np.ndarray, sd: np.ndarray, *, points: int = 2001):
    """``P(arm a draws the largest sample)`` for independent normals, by quadrature.

    ``P_a = E_u[prod_{b != a} Phi((mean_a + sd_a u - mean_b) / sd_b)]`` with
    ``u ~ N(0, 1)``, integrated with the trapezoid rule on ``[-9, 9]`` in log
    space (so products of many small CDFs do not underflow). ``sd = 0`` is a
    point mass. The result is normalised to sum to 1 (ties of point masses
    share). For smooth cases it agrees with a 20x finer grid to 1e-12; with a
    point mass or sd ratios near 1000 to about 1e-4. The reference for the
    Monte Carlo propensities of ``lin_ts``.

    Parameters
    ----------
    mean, sd : np.ndarray
        ``(..., K)`` each: one or a batch of arm sets.
    points : int, default 2001
        Grid points of ``u``.

    Returns
    -------
    np.ndarray
        ``(..., K)`` probabilities.
    """
    mean = np.asarray(mean, dtype=np.float64)
    sd = np.asarray(sd, dtype=np.float64)
    u = np.linspace(-9.0, 9.0, points)
    t = mean[..., :, None] + sd[..., :, None] * u  # (..., K, G): arm a's sample at u
    diff = t[..., None] - mean[..., None, None, :]  # (..., K, G, K)
    other_sd = sd[..., None, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_cdf = np.where(
            other_sd == 0, np.where(diff >= 0, 0.0, -np.inf), special.log_ndtr(diff / other_sd)
        )
    k = mean.shape[-1]
    log_cdf[..., np.arange(k), :, np.arange(k)] = 0.0  # leave out b == a
    density = stats.norm.pdf(u)
    p = np.trapezoid(np.exp(log_cdf.sum(axis=-1)) * density, u, axis=-1)
    return p / p.sum(axis=-1, keepdims=True)


BLOCK_FLOATS = 4_000_000  # the most CDF values beta_top_probabilities holds at once (32 MB)


def beta_top_probabilities(a: np.ndarray, b: np.ndarray, *, points: int = 4000):
    """``P(arm draws the largest sample)`` for independent Beta(a, b), by quadrature.

    ``P_k = int_0^1 prod_{j != k} F_j(Q_k(u)) du`` (``Q_k`` arm ``k``'s
    quantile function), with the midpoint rule; normalised to sum to 1.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    u = (np.arange(points) + 0.5) / points
    q = stats.beta.ppf(u[None, :], a[:, None], b[:, None])  # (K, G)
    k = a.size
    p = np.empty(k)
    # a block of arms at a time: all at once is K x G x K floats (320 MB at K = 100)
    step = max(1, BLOCK_FLOATS // (points * max(k, 1)))
    for start in range(0, k, step):
        rows = np.arange(start, min(start + step, k))
        log_cdf = np.log(stats.beta.cdf(q[rows, :, None], a[None, None, :], b[None, None, :]))
        log_cdf[np.arange(rows.size), :, rows] = 0.0
        p[rows] = np.exp(log_cdf.sum(axis=2)).mean(axis=1)
    return p / p.sum()


def _greedy(scores: np.ndarray, epsilon: float, allowed: np.ndarray) -> np.ndarray:
    """Row-wise slot-0 probabilities of a deterministic-score policy (ties share)."""
    scores = np.where(allowed, scores, -np.inf)
    best = allowed & (scores == scores.max(axis=1, keepdims=True))
    return (1.0 - epsilon) * best / _count(best) + epsilon * allowed / _count(allowed)


def _sampled(draws: np.ndarray, epsilon: float, allowed: np.ndarray) -> np.ndarray:
    """Row-wise share of ``(rows, D, K)`` draws in which each arm is on top, with the floor."""
    draws = np.where(allowed[:, None, :], draws, -np.inf)
    top = draws == draws.max(axis=2, keepdims=True)
    share = (top / top.sum(axis=2, keepdims=True)).mean(axis=1)
    return (1.0 - epsilon) * share * allowed + epsilon * allowed / _count(allowed)


def _count(mask: np.ndarray) -> np.ndarray:
    """Row-wise count of True, at least 1 (a row with no candidate gets all zeros)."""
    return np.maximum(mask.sum(axis=-1, keepdims=True), 1)


def _beta_exact(a: np.ndarray, b: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Slot-0 probabilities of beta_ts by quadrature, once per distinct candidate set."""
    sets, which = np.unique(allowed, axis=0, return_inverse=True)
    per_set = np.zeros(sets.shape, dtype=np.float64)
    for i, mask in enumerate(sets):
        if mask.any():
            per_set[i, mask] = beta_top_probabilities(a[mask], b[mask])
    return per_set[which.reshape(-1)]


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

    Scores are those of the policy modules (:mod:`bandits.linucb` etc.: the
    same ridge moments and formulas) and the slot semantics those of
    :mod:`bandits.policy` (ties share, epsilon floor over all arms). Exact for
    ``linucb``, ``epsilon_greedy`` and ``random``. For ``lin_ts`` and
    ``beta_ts`` a Monte Carlo estimate from ``params.draws`` samples per
    context, like the service's propensities but unclipped (an unbiased
    estimate of the probability), or with ``exact=True`` the quadrature of
    :func:`gaussian_top_probabilities` / :func:`beta_top_probabilities`.

    Parameters
    ----------
    policy : str
        A key of :data:`bandits.POLICIES`.
    state : ScoringState
        The target's model parameters, all ``K`` arms candidates.
    features : np.ndarray
        ``(n, d)`` contexts.
    params : PolicyParams
    rng : np.random.Generator
        Source of the Monte Carlo draws.
    exact : bool, default False
        Quadrature instead of Monte Carlo for the sampling policies.
    candidates : np.ndarray, optional
        ``(n, K)`` bool: the arms each context's request let the policy choose
        from (the others get probability 0; the epsilon floor spreads over the
        candidates). Default: every arm, for every context.

    Returns
    -------
    np.ndarray
        ``(n, K)``, rows summing to 1 (0 for a row without candidates).
    """
    n, k = features.shape[0], state.n_arms
    eps = params.epsilon
    allowed = np.ones((n, k), dtype=bool) if candidates is None else np.asarray(candidates, bool)
    if allowed.shape != (n, k):
        raise ValueError(f"candidates must have shape ({n}, {k}), got {allowed.shape}")
    if policy == "random":
        return allowed / _count(allowed)
    if policy == "beta_ts":
        a, b = 1.0 + state.successes, 1.0 + state.failures
        if exact:
            return (1.0 - eps) * _beta_exact(a, b, allowed) + eps * allowed / _count(allowed)
        blocks = [
            _sampled(rng.beta(a, b, size=(m, params.draws, k)), eps, allowed[start : start + m])
            for start, m in zip(range(0, n, _CHUNK), _chunks(n))
        ]
        return np.concatenate(blocks) if blocks else np.empty((0, k))
    if policy not in ("linucb", "epsilon_greedy", "lin_ts"):
        raise ValueError(f"unknown policy {policy!r}")
    out = np.empty((n, k))
    for start in range(0, n, _CHUNK):
        X = features[start : start + _CHUNK]
        mean = X @ state.theta.T  # (m, K)
        quad = np.maximum(((X @ state.A_inv) * X).sum(axis=2).T, 0.0)  # (m, K) x^T A_inv x
        rows = slice(start, start + X.shape[0])
        ok = allowed[rows]
        if policy == "epsilon_greedy":
            out[rows] = _greedy(mean, eps, ok)
        elif policy == "linucb":
            out[rows] = _greedy(mean + params.alpha * np.sqrt(quad), eps, ok)
        elif exact:
            # an arm far below every other never comes first and never beats one
            p = gaussian_top_probabilities(
                np.where(ok, mean, -1e300), params.v * np.sqrt(quad), points=801
            )
            out[rows] = (1.0 - eps) * p * ok.any(axis=1, keepdims=True) + eps * ok / _count(ok)
        else:
            sd = params.v * np.sqrt(quad)
            noise = rng.standard_normal((X.shape[0], params.draws, k))
            out[rows] = _sampled(mean[:, None, :] + sd[:, None, :] * noise, eps, ok)
    return out


def _chunks(n: int) -> list[int]:
    return [min(_CHUNK, n - start) for start in range(0, n, _CHUNK)]
