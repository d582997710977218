"""The holdout: a share of decisions made without the bandit, to measure what it earns.

A decision goes to the holdout with probability ``share``. With a unit id (a
user or session), the group comes from a stable hash of the unit and a salt
(the experiment's name), so a unit stays in its group while the share is
unchanged, and raising the share only moves units from the bandit into the
holdout. Without one, each decision is assigned on its own.

The holdout ranks the candidates by one of:

- ``random``: uniformly at random; slot ``j`` of ``C`` candidates has
  propensity ``1 / (C - j)``;
- ``given_order``: the candidates in the order given (the request's order, else
  the configured one: the app's own ranking, which the bandit replaced);
  every propensity is 1.

The propensities are those of the holdout policy, given that the decision is in
the holdout: the assignment does not look at the context, so an off-policy
estimate may weight each decision by the propensity of the policy that made it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .policy import Selection, check_candidates
from .slate import greedy_selection

__all__ = ["HOLDOUT_POLICIES", "assigned_to_holdout", "select_holdout"]

HOLDOUT_POLICIES = ("random", "given_order")
_SPAN = float(2**64)


def assigned_to_holdout(
    share: float, salt: str, unit_id: str | None, rng: np.random.Generator
) -> bool:
    """Whether a decision belongs to the holdout.

    Parameters
    ----------
    share : float
        Probability of the holdout, in [0, 1].
    salt : str
        Makes the groups of one unit independent across experiments.
    unit_id : str or None
        The unit: the same unit and salt always land in the same group for a
        given share. None draws from ``rng``.
    rng : np.random.Generator
        Used only without a unit id.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> assigned_to_holdout(0.5, "home_feed", "user-7", rng)
    True
    >>> assigned_to_holdout(0.5, "home_feed", "user-7", rng)  # the same again
    True
    >>> assigned_to_holdout(0.0, "home_feed", None, rng), assigned_to_holdout(1.0, "x", "u", rng)
    (False, True)
    """
    if share <= 0.0:
        return False
    if unit_id is None:
        return bool(rng.random() < share)
    digest = hashlib.blake2b(f"{salt}\x00{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SPAN < share


def select_holdout(
    policy: str,
    n_arms: int,
    rng: np.random.Generator,
    *,
    k: int = 1,
    candidates: np.ndarray | None = None,
) -> Selection:
    """Rank ``k`` arms as the holdout ``policy`` does (one of :data:`HOLDOUT_POLICIES`).

    ``candidates`` are arm indices in the order the ranking starts from (all
    ``n_arms`` in index order when None). Scores are 0: the holdout has no model.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sel = select_holdout("given_order", 4, rng, k=2, candidates=np.array([3, 1, 2]))
    >>> sel.arms.tolist(), sel.propensities.tolist()
    ([3, 1], [1.0, 1.0])
    >>> select_holdout("random", 4, rng, k=2).propensities.tolist()
    [0.25, 0.3333333333333333]
    """
    cand, _ = check_candidates(n_arms, k, candidates)
    if policy == "random":
        # every candidate ties at 0, so each slot is uniform among those left: 1 / (C - j)
        return greedy_selection(np.zeros(cand.size), cand, k, rng, 0.0)
    if policy == "given_order":
        return Selection(
            arms=cand[:k].copy(), scores=np.zeros(k), propensities=np.ones(k), estimated=False
        )
    raise ValueError(
        f"unknown holdout policy {policy!r}; expected one of {', '.join(HOLDOUT_POLICIES)}"
    )
