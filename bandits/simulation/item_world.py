"""A catalogue of short-lived items whose reward depends on what they are.

Unlike the fixed arms of :mod:`bandits.simulation.environments`, items here
arrive and leave: each lives a few hundred rounds, about ``alive`` are in the
catalogue at any time, and each round offers ``offered`` of them, drawn
uniformly without replacement from the live ones. Every item has numeric
features ``z`` (``q`` of them, standard normal), every round a user context
``x`` (``d`` features, standard normal). The reward of item ``z`` for user
``x`` comes from a hidden bilinear matrix ``W`` (``(d + 1) x (q + 1)``,
standard normal, fixed per seed)::

    s = bias + spread * [1, x]^T W [1, z] / sqrt((d + 1) (q + 1))
    mean = 1 / (1 + exp(-s))

so ``s`` has standard deviation ``spread`` over users and items: the user's
context crossed with the item's features (plus each side alone and a
constant). The reward is ``Bernoulli(mean)`` (``noise = "bernoulli"``), or
``mean + noise_sd * N(0, 1)`` (``noise = "gaussian"``). The defaults give a
random choice about 0.33 and the best of the 10 offered about 0.8, as in the
environment issue 13 describes. A per-item model sees an item in about
``lifetime * offered / alive`` = 15 rounds of its life, which is too few to
learn it; a model over item features can.

As with :class:`~bandits.simulation.environments.Episode`, the whole episode
is drawn up front from the seed (contexts, items, offers, and the reward every
offered item *would* pay), so agents on the same seed face the same rounds and
the same coin flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

__all__ = ["ItemEpisode", "ItemWorld"]


@dataclass(frozen=True)
class ItemEpisode:
    """One seeded run of :class:`ItemWorld`.

    Attributes
    ----------
    features : np.ndarray
        ``(T, d)`` raw context of each round (no intercept).
    items : np.ndarray
        ``(N, q)`` features of every item that is alive at some round.
    born, dies : np.ndarray
        ``(N,)`` intp: item ``i`` is alive in rounds ``born[i] <= t < dies[i]``
        (``born`` may be negative: items already there at round 0).
    candidates : np.ndarray
        ``(T, C)`` intp item ids offered in each round.
    means : np.ndarray
        ``(T, C)`` expected reward of each offered item.
    rewards : np.ndarray
        ``(T, C)`` reward each offered item pays if chosen.
    hidden : np.ndarray
        ``(d + 1, q + 1)`` the bilinear matrix ``W`` (for checks; agents never see it).
    """

    features: np.ndarray
    items: np.ndarray
    born: np.ndarray
    dies: np.ndarray
    candidates: np.ndarray
    means: np.ndarray
    rewards: np.ndarray
    hidden: np.ndarray

    @property
    def rounds(self) -> int:
        """Number of rounds ``T``."""
        return self.features.shape[0]

    @property
    def n_items(self) -> int:
        """Number of items ``N``."""
        return self.items.shape[0]

    def alive(self, t: int) -> np.ndarray:
        """Ids of the items alive in round ``t``."""
        return np.flatnonzero((self.born <= t) & (self.dies > t))


class ItemWorld:
    """Items that arrive and leave, rewarded by context × item features.

    Parameters
    ----------
    dim : int, default 6
        ``d``, context features.
    item_dim : int, default 6
        ``q``, item features.
    alive : int, default 200
        Mean number of live items (arrivals are Poisson at ``alive / mean
        lifetime`` a round).
    lifetime : (int, int), default (200, 400)
        An item lives a uniform whole number of rounds in this range.
    offered : int, default 10
        Candidates per round.
    bias, spread : float, default -1.2, 2.5
        Location and standard deviation of the logit ``s``.
    noise : {"bernoulli", "gaussian"}, default "bernoulli"
    noise_sd : float, default 0.1
        Standard deviation of the Gaussian noise.

    Examples
    --------
    >>> world = ItemWorld()
    >>> ep = world.episode(1000, np.random.default_rng(7))
    >>> ep.candidates.shape, bool(abs(ep.alive(500).size - 200) < 60)
    ((1000, 10), True)
    """

    name = "items"
    description = "short-lived items, reward from context x item features"

    def __init__(
        self,
        dim: int = 6,
        item_dim: int = 6,
        alive: int = 200,
        lifetime: tuple[int, int] = (200, 400),
        offered: int = 10,
        bias: float = -1.2,
        spread: float = 2.5,
        noise: str = "bernoulli",
        noise_sd: float = 0.1,
    ) -> None:
        if noise not in ("bernoulli", "gaussian"):
            raise ValueError(f'noise must be "bernoulli" or "gaussian", got {noise!r}')
        if not 1 <= lifetime[0] <= lifetime[1]:
            raise ValueError(f"lifetime must be (low, high) with 1 <= low <= high, got {lifetime}")
        if offered < 1 or alive < offered:
            raise ValueError(f"need 1 <= offered <= alive, got {offered} and {alive}")
        self.dim = dim
        self.item_dim = item_dim
        self.n_alive = alive
        self.lifetime = lifetime
        self.offered = offered
        self.bias = bias
        self.spread = spread
        self.noise = noise
        self.noise_sd = noise_sd

    def hidden(self, rng: np.random.Generator) -> np.ndarray:
        """The ``(d + 1, q + 1)`` bilinear matrix ``W`` of one seed."""
        return rng.standard_normal((self.dim + 1, self.item_dim + 1))

    def expected(self, W: np.ndarray, x: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``(C,)`` expected rewards of ``items`` (``(C, q)``) for one context ``x`` (``(d,)``)."""
        s = np.concatenate(([1.0], x)) @ W[:, 1:] @ items.T + np.concatenate(([1.0], x)) @ W[:, 0]
        return expit(self.bias + self.spread * s / np.sqrt(W.size))

    def _catalogue(self, rounds: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Birth and death rounds of every item alive at some round in ``[0, rounds)``."""
        low, high = self.lifetime
        rate = self.n_alive / ((low + high) / 2.0)
        start = -high  # from here on, the count at round 0 is the steady state
        counts = rng.poisson(rate, size=rounds - start)
        born = np.repeat(np.arange(start, rounds), counts)
        dies = born + rng.integers(low, high + 1, size=born.size)
        keep = dies > 0
        return born[keep], dies[keep]

    def episode(self, rounds: int, rng: np.random.Generator) -> ItemEpisode:
        """Draw ``rounds`` rounds: the hidden matrix, the catalogue, contexts, offers, rewards."""
        W = self.hidden(rng)
        born, dies = self._catalogue(rounds, rng)
        items = rng.standard_normal((born.size, self.item_dim))
        features = rng.standard_normal((rounds, self.dim))
        candidates = np.empty((rounds, self.offered), dtype=np.intp)
        order = np.argsort(dies, kind="stable")  # items leave in this order
        first = 0  # items[order[:first]] have left
        for t in range(rounds):  # a loop over rounds: each draws from its live items
            while first < order.size and dies[order[first]] <= t:
                first += 1
            live = order[first:]
            live = live[born[live] <= t]
            if live.size < self.offered:
                raise ValueError(f"round {t} has {live.size} live items, fewer than offered")
            candidates[t] = rng.choice(np.sort(live), self.offered, replace=False)
        xt = np.concatenate((np.ones((rounds, 1)), features), axis=1)
        zt = np.concatenate((np.ones((born.size, 1)), items), axis=1)
        s = np.einsum("ti,ij,tcj->tc", xt, W, zt[candidates])
        means = expit(self.bias + self.spread * s / np.sqrt(W.size))
        if self.noise == "bernoulli":
            rewards = (rng.random(means.shape) < means).astype(np.float64)
        else:
            rewards = means + self.noise_sd * rng.standard_normal(means.shape)
        return ItemEpisode(features, items, born, dies, candidates, means, rewards, W)
