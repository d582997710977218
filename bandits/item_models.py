"""Models over item features: one shared model, or shared plus per-arm (hybrid).

A per-arm (disjoint) model learns each item only from that item's own
rewards, so an item that lives a few hundred rounds, or a new one, is ranked
from almost nothing. The models here score a candidate from what it *is*:
its item features ``z`` crossed with the context ``x``.

Feature vector and its size ``D``
---------------------------------
``phi(x, z)``, the shared vector of a (context, item) pair, and its size are
:class:`~bandits.item_layout.ItemLayout`'s (bandits/item_layout.py): the
context crossed with the item's features, the item's alone and the context's
alone; ``D = 289`` for 16 context and 16 item features, all pairs.

Learning state
--------------
- ``shared``: one ridge model over ``phi`` (``A``, ``A^{-1}`` by
  Sherman-Morrison, ``b``, ``theta``), a :class:`~bandits.state.LearningState`
  with one arm, updated by :func:`bandits.learning.update` itself. **No state
  per item**: an item is scored from its features alone, so a new item starts
  from everything learned about items like it, and a catalogue needs no
  per-item limit.
- ``hybrid`` (Li et al. 2010, Algorithm 2): the shared part ``A0, b0`` over
  ``phi`` plus, per arm, ``A_a`` (``d x d``), ``B_a`` (``d x D``) and ``b_a``
  over ``x``. **Per item**: ``A_a``, ``A_a^{-1}``, ``B_a``, ``b_a`` (and the
  unused ``theta_a``, ``n_a`` and counts of the per-arm state): ``2 d^2 + d D +
  2 d + 3`` floats, for ``d = 17, D = 289`` that is 5,528 floats = 44 kB per
  item (``B_a`` is 89% of it), so 200 live items take 8.8 MB and 100,000
  items 4.4 GB. The hybrid model therefore needs the catalogue's per-item
  state bounded (slots of departed items recycled by :func:`hybrid_reset_arm`).

The paper's ``A0`` is the Schur complement of the joint design matrix of the
features ``[phi, x e_a]``; the update of one arm's reward changes it by one
rank-one term ``v v^T / (1 + x^T A_a^{-1} x)`` with ``v = phi - B_a^T A_a^{-1}
x`` (the top-left block of the joint inverse changes by Sherman-Morrison),
and ``b0`` by ``(r - x^T A_a^{-1} b_a) v / (1 + x^T A_a^{-1} x)``. So the shared
part is kept as a one-arm :class:`~bandits.state.LearningState` too and
updated by :func:`bandits.learning.update` with that vector: ``A0^{-1}`` by
Sherman-Morrison, never re-inverted. ``tests/test_item_models.py`` checks this
against the paper's formulas.

Forgetting
----------
``discount < 1`` is :func:`bandits.learning.update`'s forgetting: the
shared statistics are discounted by ``gamma`` on every update (with its prior
restore), and in ``hybrid`` the rewarded arm's ``A_a, b_a`` (and ``B_a``) on its
own updates. For ``hybrid`` that is a heuristic: the other arms' ``B`` terms
inside ``A0`` are not discounted, so it is not one discounted joint
regression. ``discount="auto"`` (:mod:`bandits.auto_forgetting`): a shared
model keeps everything until its level column shows a clear change; a hybrid
model's per-arm part forgets as a per-arm model does and its shared part
keeps everything. Every update is a deterministic function of the state and the
event, so replaying the same events in the same order rebuilds the same bits.

Choosing
--------
Given the candidates' predicted rewards ``mean`` and variances ``quad``
(``x^T A^{-1} x`` of the model, :func:`shared_moments`,
:func:`hybrid_moments`), :func:`select_items` runs the very ``select`` of
:mod:`bandits.linucb`, :mod:`bandits.lin_ts` or the inverse-gap weighting of
:mod:`bandits.squarecb` on them, so slates, ties, the epsilon floor and the
propensities are exactly those policies' (see :mod:`bandits.policy`).
``lin_ts`` samples each candidate's score from its own marginal posterior
``N(mean, v^2 quad)``, independently across candidates, as the disjoint
``lin_ts`` does; under a shared model the candidates' posteriors are
correlated, which this ignores, and in exchange its propensities are the
quadrature of :func:`bandits.lin_ts.top_probability` (Monte Carlo only where
``lin_ts`` itself falls back to it: a candidate whose score has no spread).

References
----------
.. [1] L. Li, W. Chu, J. Langford, R. E. Schapire. "A contextual-bandit approach
   to personalized news article recommendation." WWW 2010, Algorithm 2.
.. [2] D. Foster, A. Rakhlin. "Beyond UCB: optimal and efficient contextual
   bandits with regression oracles." ICML 2020.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import lin_ts, linucb
from .auto_forgetting import AUTO, auto_discounts
from .item_layout import ItemLayout
from .learning import update
from .policy import PolicyParams, Selection
from .squarecb import gamma, select_from_predictions
from .state import LearningState, ScoringState, prior

__all__ = [
    "ItemLayout",
    "HybridState",
    "ITEM_POLICIES",
    "shared_prior",
    "shared_update",
    "shared_moments",
    "shared_item_moments",
    "hybrid_prior",
    "hybrid_update",
    "hybrid_moments",
    "hybrid_scoring_moments",
    "hybrid_add_arms",
    "hybrid_reset_arm",
    "select_items",
    "item_target_probabilities",
    "learned_rewards",
]


@dataclass
class HybridState:
    """The hybrid model's state (Li et al. 2010, Algorithm 2).

    Attributes
    ----------
    shared : LearningState
        One arm over ``phi`` (``D``): ``A`` is the paper's ``A0``, ``b`` its
        ``b0``, ``theta`` its ``beta = A0^{-1} b0``; ``n[0]`` counts rewards.
    arms : LearningState
        ``K`` arms over the context (``d``): ``A`` is ``A_a``, ``b`` is ``b_a``.
        Its ``theta`` is ``A_a^{-1} b_a``, not the paper's ``theta_a``, which
        depends on ``beta`` and is computed when scoring.
    B : np.ndarray
        ``(K, d, D)``: the paper's ``B_a = sum x phi^T``.
    """

    shared: LearningState
    arms: LearningState
    B: np.ndarray


def shared_prior(dim: int, ridge: float = 1.0) -> LearningState:
    """The ``shared`` model that has learned nothing: one arm of ``dim`` (``D``) features."""
    return prior(1, dim, ridge)


def shared_update(
    state: LearningState,
    phi: np.ndarray,
    reward: float,
    *,
    discount: float | str = 1.0,
    ridge: float = 1.0,
    success: float | None = None,
    reward_range: tuple[float, float] = (0.0, 1.0),
    level: int = 0,
) -> None:
    """Learn one reward of the chosen item's vector ``phi``, in place.

    It is :func:`bandits.learning.update` of the one arm, with its checks and forgetting;
    with ``discount="auto"``, ``level`` is the layout's
    :attr:`~bandits.item_layout.ItemLayout.level_column` and the model keeps everything
    until that column shows a clear change (:mod:`bandits.auto_forgetting`).
    """
    update(
        state,
        0,
        phi,
        reward,
        success=success,
        discount=discount,
        ridge=ridge,
        reward_range=reward_range,
        level=level,
        auto_base=1.0,
    )


def shared_moments(state: ScoringState, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted reward and variance term of each candidate of the shared model.

    ``(C,)`` ``phi_c . theta`` and ``(C,)`` ``phi_c^T A^{-1} phi_c`` for the rows of ``(C, D)``
    ``phi``.
    """
    mean = phi @ state.theta[0]
    quad = np.einsum("cd,cd->c", phi @ state.A_inv[0], phi)
    return mean, np.maximum(quad, 0.0)


def shared_item_moments(
    state: ScoringState, layout: ItemLayout, x: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shared_moments` of the candidates ``items`` (``(C, q)``) at context ``x``, fast.

    Every ``phi_c`` is an entry-wise selection of ``[1, x] ⊗ [z_c, 1]``
    (:attr:`ItemLayout.grid`), so with ``U`` the ``(D, q + 1)`` matrix that puts
    ``[1, x]_{a_k}`` at ``(k, b_k)``, ``phi_c = U [z_c, 1]`` and
    ``phi_c^T A^{-1} phi_c = [z_c, 1]^T (U^T A^{-1} U) [z_c, 1]``: one ``D^2 (q + 1)``
    product per request, then ``(q + 1)^2`` per candidate, instead of ``D^2`` per
    candidate. Equal to :func:`shared_moments` up to rounding.
    """
    a, b = layout.grid
    dim = len(a)
    w = np.concatenate(([1.0], np.asarray(x, dtype=np.float64)))[a]
    U = np.zeros((dim, layout.item_dim + 1))
    U[np.arange(dim), b] = w
    zt = np.hstack([np.asarray(items, dtype=np.float64), np.ones((len(items), 1))])
    G = U.T @ state.A_inv[0] @ U
    quad = np.einsum("cj,cj->c", zt @ G, zt)
    mean = zt @ (U.T @ state.theta[0])
    return mean, np.maximum(quad, 0.0)


def hybrid_prior(
    n_arms: int, context_dim: int, dim: int, ridge: float = 1.0, arm_ridge: float | None = None
) -> HybridState:
    """The ``hybrid`` model that has learned nothing.

    ``n_arms`` arms, ``d = context_dim`` per-arm features, ``D = dim`` shared
    features; ``A0 = ridge * I`` and ``A_a = arm_ridge * I`` (``ridge`` when
    None; the paper has 1 for both). A larger ``arm_ridge`` keeps a new item
    closer to what the shared part says of it.
    """
    return HybridState(
        shared=prior(1, dim, ridge),
        arms=prior(n_arms, context_dim, ridge if arm_ridge is None else arm_ridge),
        B=np.zeros((n_arms, context_dim, dim)),
    )


def hybrid_update(
    state: HybridState,
    arm: int,
    x: np.ndarray,
    phi: np.ndarray,
    reward: float,
    *,
    discount: float | str = 1.0,
    ridge: float = 1.0,
    arm_ridge: float | None = None,
    success: float | None = None,
    reward_range: tuple[float, float] = (0.0, 1.0),
) -> None:
    """Learn one reward of ``arm`` at context ``x`` with shared vector ``phi``, in place.

    The paper's update (Algorithm 2, lines 17-23) written as one rank-one
    update of ``A0, b0`` (module docstring) followed by the arm's own update
    of ``A_a, b_a`` and ``B_a += x phi^T``. Touches only the shared rows and
    ``arm``'s rows. ``ridge`` and ``arm_ridge`` are those of
    :func:`hybrid_prior`, used only to restore the priors when ``discount < 1``.

    ``discount="auto"``: the arm's part (``A_a``, ``b_a``, ``B_a``) is
    discounted as :mod:`bandits.auto_forgetting` discounts a per-arm model,
    from its own change score (``x``'s intercept in column 0, ``success`` and
    ``reward_range`` as for :func:`bandits.learning.update`); the shared part
    not at all, since it learns residuals, whose level is not a reward to
    watch, and what is particular to one item is its own part's to follow.

    Raises
    ------
    ValueError
        If ``arm`` is out of range, a vector has the wrong shape or is not
        finite, ``reward`` is not finite or ``discount``/``ridge`` are invalid;
        :class:`~bandits.learning.UnlearnableReward` if a vector is too large
        for its model, possibly after the shared row was updated: learn on a
        copy where that matters (the worker and a rebuild do).
    """
    arms = state.arms
    n_arms, d = arms.theta.shape
    if not 0 <= arm < n_arms:
        raise ValueError(f"arm {arm} is out of range for {n_arms} arms")
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (d,) or not np.isfinite(x).all():
        raise ValueError(f"x must be a finite ({d},) vector")
    A_inv, B = arms.A_inv[arm], state.B[arm]
    u = A_inv @ x
    scale = 1.0 + x @ u
    v = np.asarray(phi, dtype=np.float64) - B.T @ u
    root = np.sqrt(scale)
    residual = reward - u @ arms.b[arm]  # x^T A_a^{-1} b_a: the arm's own prediction
    own_ridge = ridge if arm_ridge is None else arm_ridge
    shared_discount = arm_discount = discount
    if discount == AUTO:
        shared_discount = 1.0
        # the very discount update(arms, ..., AUTO) applies below: B_a must follow A_a
        arm_discount = auto_discounts(arms, arm, own_ridge, *reward_range)[0]
    update(state.shared, 0, v / root, residual / root, discount=shared_discount, ridge=ridge)
    if arm_discount != 1.0:
        B *= arm_discount
    B += x[:, None] * phi
    update(
        arms,
        arm,
        x,
        reward,
        success=success,
        discount=discount,
        ridge=own_ridge,
        reward_range=reward_range,
    )


def hybrid_moments(
    state: HybridState, arms: np.ndarray, x: np.ndarray, phi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted reward and variance term ``s`` of each candidate (Algorithm 2, lines 8-11).

    Parameters
    ----------
    state : HybridState
        Not modified.
    arms : np.ndarray
        ``(C,)`` arm index of each candidate.
    x : np.ndarray
        ``(d,)`` context.
    phi : np.ndarray
        ``(C, D)`` shared vectors of the candidates.

    Returns
    -------
    mean : np.ndarray
        ``(C,)`` ``phi_c . beta + x . theta_c``, ``theta_c = A_c^{-1} (b_c - B_c beta)``.
    quad : np.ndarray
        ``(C,)`` the paper's ``s``, which equals ``(phi_c - w_c)^T A0^{-1}
        (phi_c - w_c) + x^T A_c^{-1} x`` with ``w_c = B_c^T A_c^{-1} x``.
    """
    beta = state.shared.theta[0]
    A_inv = state.arms.A_inv[arms]
    B = state.B[arms]
    u = A_inv @ x  # (C, d): A_c^{-1} x
    mean = phi @ beta + np.einsum("cd,cd->c", u, state.arms.b[arms] - B @ beta)
    r = phi - _transposed_products(B, u)
    quad = np.einsum("ck,ck->c", r @ state.shared.A_inv[0], r) + u @ x
    return mean, np.maximum(quad, 0.0)


def hybrid_scoring_moments(
    shared: ScoringState, arms: ScoringState, B: np.ndarray, x: np.ndarray, phi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`hybrid_moments` from what choosing keeps: ``A^{-1}`` and ``theta``, not ``b``.

    ``shared`` is the shared part (row 0), ``arms`` and ``B`` (``(C, d, D)``) the
    candidates' own rows, in candidate order. With ``theta_c = A_c^{-1} b_c`` the
    paper's mean is ``phi_c . beta + x . theta_c - (A_c^{-1} x) . (B_c beta)``.
    """
    beta = shared.theta[0]
    u = arms.A_inv @ x  # (C, d): A_c^{-1} x
    mean = phi @ beta + arms.theta @ x - np.einsum("cd,cd->c", u, B @ beta)
    r = phi - _transposed_products(B, u)
    quad = np.einsum("ck,ck->c", r @ shared.A_inv[0], r) + u @ x
    return mean, np.maximum(quad, 0.0)


def _transposed_products(B: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``(C, D)`` rows ``B_c^T u_c`` of ``B`` ``(C, d, D)`` and ``u`` ``(C, d)``.

    A batched matmul: about half the time of the equivalent einsum at 200
    candidates of d = 17, D = 289 (0.13 against 0.23 ms on the bench box).
    """
    return np.matmul(u[:, None, :], B)[:, 0, :]


def hybrid_add_arms(state: HybridState, n_new: int, ridge: float = 1.0) -> HybridState:
    """A copy of ``state`` with ``n_new`` fresh arms appended (indices ``K .. K + n_new - 1``)."""
    d, dim = state.B.shape[1:]
    fresh = prior(n_new, d, ridge)
    arms = LearningState(
        **{f: np.concatenate((getattr(state.arms, f), getattr(fresh, f))) for f in _FIELDS}
    )
    return HybridState(state.shared, arms, np.concatenate((state.B, np.zeros((n_new, d, dim)))))


def hybrid_reset_arm(state: HybridState, arm: int, ridge: float = 1.0) -> None:
    """Return ``arm``'s per-arm state to the prior, in place (a departed item's slot, for reuse)."""
    fresh = prior(1, state.B.shape[1], ridge)
    for f in _FIELDS:
        getattr(state.arms, f)[arm] = getattr(fresh, f)[0]
    state.B[arm] = 0.0


_FIELDS = ("A_inv", "theta", "n", "successes", "failures", "A", "b")


def learned_rewards(state: LearningState | HybridState) -> float:
    """Rewards a shared or hybrid model has learned: ``t`` of SquareCB's ``gamma``."""
    shared = state.shared if isinstance(state, HybridState) else state
    return float(shared.n[0])


def _moment_state(mean: np.ndarray, quad: np.ndarray) -> ScoringState:
    """The candidates as arms of a one-feature model with moments ``mean, quad`` at ``x = [1]``."""
    c = mean.size
    zeros = np.zeros(c)
    return ScoringState(quad.reshape(c, 1, 1), mean.reshape(c, 1), zeros, zeros, zeros)


_ONE = np.ones(1)


def _linucb(mean, quad, rng, params, k, learned) -> Selection:
    return linucb.select(_moment_state(mean, quad), _ONE, rng, params, k=k)


def _lin_ts(mean, quad, rng, params, k, learned) -> Selection:
    return lin_ts.select(_moment_state(mean, quad), _ONE, rng, params, k=k)


def _squarecb(mean, quad, rng, params, k, learned) -> Selection:
    greediness = gamma(learned, params.gamma_scale, params.gamma_exponent)
    return select_from_predictions(mean, np.arange(mean.size), k, rng, greediness, params.epsilon)


ITEM_POLICIES: dict[str, Callable[..., Selection]] = {
    "linucb": _linucb,
    "lin_ts": _lin_ts,
    "squarecb": _squarecb,
}


def item_target_probabilities(
    policy: str,
    mean: np.ndarray,
    quad: np.ndarray,
    params: PolicyParams,
    rng: np.random.Generator,
    *,
    learned: float = 0.0,
    exact: bool = False,
) -> np.ndarray:
    """Slot-0 probability of each candidate under :func:`select_items`, for off-policy estimates.

    ``mean`` and ``quad`` are the candidates' ``(C,)`` moments; the result is
    ``(C,)`` and sums to 1: :func:`bandits.ope.target_probabilities` of the
    candidates as arms of a one-feature model (as :func:`select_items` scores
    them), with ``learned`` rewards for SquareCB's ``gamma``.
    """
    from .ope import target_probabilities  # ope builds on the per-arm policies this extends

    state = _moment_state(np.asarray(mean, dtype=np.float64), np.asarray(quad, dtype=np.float64))
    state.n[0] = learned  # only SquareCB reads it: its gamma follows the rewards learned
    return target_probabilities(policy, state, _ONE[None], params, rng, exact=exact)[0]


def select_items(
    policy: str,
    mean: np.ndarray,
    quad: np.ndarray,
    rng: np.random.Generator,
    params: PolicyParams,
    *,
    k: int = 1,
    learned: float = 0.0,
) -> Selection:
    """Rank ``k`` of the candidates given the model's predictions and variances.

    Parameters
    ----------
    policy : str
        ``"linucb"``, ``"lin_ts"`` or ``"squarecb"``.
    mean, quad : np.ndarray
        ``(C,)`` from :func:`shared_moments` or :func:`hybrid_moments`.
    rng : np.random.Generator
        All randomness.
    params : PolicyParams
        As for the per-arm policy of the same name.
    k : int, default 1
        Slate size, ``1 <= k <= C``.
    learned : float, default 0.0
        Rewards the model has learned (:func:`learned_rewards`); ``squarecb`` only.

    Returns
    -------
    Selection
        ``arms`` are positions ``0..C-1`` into the candidates, best first, with
        the policy's scores and propensities (exact; ``lin_ts``'s by quadrature).

    Raises
    ------
    ValueError
        If ``policy`` is unknown, ``k`` is invalid or the moments are not
        finite ``(C,)`` arrays of the same length.

    Examples
    --------
    Two candidates tied best, a 30% floor: slot 0 takes one of them with
    ``0.7 / 2 + 0.3 / 3``, slot 1 the other with ``0.7 + 0.3 / 2``:

    >>> sel = select_items("linucb", np.array([0.1, 0.5, 0.5]), np.zeros(3),
    ...                    np.random.default_rng(1), PolicyParams(epsilon=0.3), k=2)
    >>> sel.arms.tolist(), sel.propensities.round(3).tolist()
    ([2, 1], [0.45, 0.85])
    """
    try:
        choose = ITEM_POLICIES[policy]
    except KeyError:
        raise ValueError(
            f"unknown item policy {policy!r}; expected one of {', '.join(sorted(ITEM_POLICIES))}"
        ) from None
    mean = np.asarray(mean, dtype=np.float64)
    quad = np.asarray(quad, dtype=np.float64)
    if mean.ndim != 1 or mean.shape != quad.shape or mean.size == 0:
        raise ValueError("mean and quad must be non-empty (C,) arrays of the same length")
    if not (np.isfinite(mean).all() and np.isfinite(quad).all()):
        raise ValueError("mean and quad must be finite")
    return choose(mean, np.maximum(quad, 0.0), rng, params, k, learned)
