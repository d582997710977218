"""banditd's policy library: contextual bandits in pure numpy.

No I/O and no service dependencies: a notebook runs the same code as the
service. State is a dataclass of arrays with the arm axis first
(:mod:`bandits.state`); :func:`update` learns one reward in place
(:mod:`bandits.learning`); each policy module has a pure ``select`` that ranks
arms and reports their propensities (semantics in :mod:`bandits.policy`);
:class:`FeatureSpec` turns a request's context into ``x``
(:mod:`bandits.features`). :mod:`bandits.estimators` wraps them in classes
in the scikit-learn manner (``partial_fit``, ``predict``, ``predict_proba``).

Policies, by registered name:

- ``linucb``: :mod:`bandits.linucb`, Li et al. (2010), disjoint model.
- ``lin_ts``: :mod:`bandits.lin_ts`, Agrawal & Goyal (2013).
- ``beta_ts``: :mod:`bandits.beta_ts`, Beta-Bernoulli Thompson sampling.
- ``epsilon_greedy``: :mod:`bandits.epsilon_greedy`.
- ``squarecb``: :mod:`bandits.squarecb`, Foster & Rakhlin (2020), inverse-gap weighting.
- ``random``: :mod:`bandits.uniform`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import beta_ts, epsilon_greedy, lin_ts, linucb, squarecb, uniform
from .features import FeatureError, FeatureSpec
from .learning import rescale, update
from .policy import PolicyParams, Selection
from .state import LearningState, ScoringState, arm_prior, prior

__all__ = [
    "POLICIES",
    "select",
    "FeatureSpec",
    "FeatureError",
    "ScoringState",
    "LearningState",
    "prior",
    "arm_prior",
    "update",
    "rescale",
    "PolicyParams",
    "Selection",
]

POLICIES: dict[str, Callable[..., Selection]] = {
    "linucb": linucb.select,
    "lin_ts": lin_ts.select,
    "beta_ts": beta_ts.select,
    "epsilon_greedy": epsilon_greedy.select,
    "squarecb": squarecb.select,
    "random": uniform.select,
}


def select(
    policy: str,
    state: ScoringState,
    x: np.ndarray,
    rng: np.random.Generator,
    params: PolicyParams,
    *,
    k: int = 1,
    candidates: np.ndarray | None = None,
) -> Selection:
    """Rank ``k`` arms with the policy registered as ``policy``.

    Parameters
    ----------
    policy : str
        A key of :data:`POLICIES`.
    state, x, rng, params, k, candidates
        Passed to the policy's ``select``.

    Returns
    -------
    Selection
        The policy's ranked arms, scores and propensities.

    Raises
    ------
    ValueError
        If ``policy`` is not registered, or the policy rejects its arguments.

    Examples
    --------
    >>> import numpy as np
    >>> sel = select("random", prior(3, 2), np.ones(2), np.random.default_rng(0),
    ...              PolicyParams(), k=2)
    >>> sel.propensities.tolist()
    [0.3333333333333333, 0.5]
    """
    try:
        choose = POLICIES[policy]
    except KeyError:
        raise ValueError(
            f"unknown policy {policy!r}; expected one of {', '.join(sorted(POLICIES))}"
        ) from None
    return choose(state, x, rng, params, k=k, candidates=candidates)
