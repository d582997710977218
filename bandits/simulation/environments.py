"""Simulated bandit problems with known expected rewards.

An environment draws a whole :class:`Episode` up front from a seed: the
context of every round, every arm's expected reward in that round and the
reward every arm *would* have paid. Pulling arm ``a`` in round ``t`` pays
``rewards[t, a]``. Drawing the counterfactual rewards in advance gives every
agent run on the same seed the same contexts and the same coin flips (common
random numbers), so differences between agents are not luck of the draw, and
regret against the best arm is exact (``means`` are known).

Contexts are raw features without an intercept; agents add one (as banditd's
:class:`~bandits.FeatureSpec` does by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Episode", "Environment", "SyntheticLinear", "Drifting", "Digits", "ENVIRONMENTS"]


@dataclass(frozen=True)
class Episode:
    """One seeded run of an environment.

    Attributes
    ----------
    features : np.ndarray
        ``(T, d)`` raw context of each round (no intercept).
    means : np.ndarray
        ``(T, K)`` expected reward of each arm in each round.
    rewards : np.ndarray
        ``(T, K)`` reward each arm pays if pulled in that round.
    """

    features: np.ndarray
    means: np.ndarray
    rewards: np.ndarray

    @property
    def rounds(self) -> int:
        """Number of rounds ``T``."""
        return self.features.shape[0]

    @property
    def n_arms(self) -> int:
        """Number of arms ``K``."""
        return self.means.shape[1]

    @property
    def dim(self) -> int:
        """Number of raw features ``d``."""
        return self.features.shape[1]


class Environment:
    """What every environment offers: a name, its shape, and seeded episodes."""

    name: str = ""
    n_arms: int = 0
    dim: int = 0
    description: str = ""

    def episode(self, rounds: int, rng: np.random.Generator) -> Episode:
        """Draw ``rounds`` rounds from ``rng``."""
        raise NotImplementedError


def _bernoulli(means: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(means.shape) < means).astype(np.float64)


class SyntheticLinear(Environment):
    """Linear click-through rates between 5% and 15%, Bernoulli rewards.

    Each round's context ``z`` has ``dim`` features uniform on [0, 1]. Arm
    ``a`` clicks with probability ``c_a + w_a . z``: each seed draws the arm's
    own rate ``c_a`` uniformly from ``[low, low + base_spread]`` and weights
    ``w_a >= 0`` with ``sum(w_a) = context_spread`` (a Dirichlet draw), so
    every rate lies in [5%, 15%] by default. Some arms are better on average
    and the best arm also depends on the context. The model is exactly the
    disjoint linear model banditd fits, so this measures learning speed, not
    model misspecification.

    Parameters
    ----------
    n_arms : int, default 5
    dim : int, default 5
    low : float, default 0.05
        Lowest click rate.
    base_spread : float, default 0.04
        Range of the arms' own rates.
    context_spread : float, default 0.06
        How much the context can add.
    concentration : float, default 0.5
        Dirichlet parameter of the weights: below 1, each arm leans on a few
        features, so different contexts prefer different arms.
    """

    name = "synthetic"
    description = "linear Bernoulli, click rates 5-15%"

    def __init__(
        self,
        n_arms: int = 5,
        dim: int = 5,
        low: float = 0.05,
        base_spread: float = 0.04,
        context_spread: float = 0.06,
        concentration: float = 0.5,
    ) -> None:
        self.n_arms = n_arms
        self.dim = dim
        self.low = low
        self.base_spread = base_spread
        self.context_spread = context_spread
        self.concentration = concentration

    def arms(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(K,)`` own rates ``c_a`` and ``(K, d)`` weights ``w_a`` of one seed."""
        c = self.low + self.base_spread * rng.random(self.n_arms)
        alpha = np.full(self.dim, self.concentration)
        return c, self.context_spread * rng.dirichlet(alpha, self.n_arms)

    def episode(self, rounds: int, rng: np.random.Generator) -> Episode:
        """Draw ``rounds`` rounds: fresh arms, uniform contexts, Bernoulli clicks."""
        c, w = self.arms(rng)
        z = rng.random((rounds, self.dim))
        means = c + z @ w.T
        return Episode(z, means, _bernoulli(means, rng))


class Drifting(SyntheticLinear):
    """:class:`SyntheticLinear` whose arms swap their weights halfway through.

    At round ``T // 2`` arm ``a`` takes the rate and weights arm ``a + shift``
    had (mod ``K``), so the best arm changes and the old best arm usually
    becomes a poor one, while the set of rates stays the same. A learner that
    never forgets has half an episode of evidence for the old ranking.

    Parameters
    ----------
    shift : int, default 2
        How far the weights rotate across arms at the change.
    **kwargs
        As for :class:`SyntheticLinear`.
    """

    name = "drifting"
    description = "synthetic, arms swap weights at T/2"

    def __init__(self, shift: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shift = shift

    def episode(self, rounds: int, rng: np.random.Generator) -> Episode:
        """Draw ``rounds`` rounds with the change at ``rounds // 2``."""
        c, w = self.arms(rng)
        z = rng.random((rounds, self.dim))
        half = rounds // 2
        means = np.empty((rounds, self.n_arms))
        means[:half] = c + z[:half] @ w.T
        c2, w2 = np.roll(c, -self.shift), np.roll(w, -self.shift, axis=0)
        means[half:] = c2 + z[half:] @ w2.T
        return Episode(z, means, _bernoulli(means, rng))


class Digits(Environment):
    """scikit-learn's handwritten digits as a 10-arm bandit.

    Each round shows one of the 1,797 8x8 images of ``load_digits`` (drawn
    with replacement); arm ``a`` pays 1 when the digit is ``a`` and 0
    otherwise, so the best arm always pays 1 and regret is the number of
    misclassified rounds. The 64 pixels are scaled to [0, 1], reduced to their
    first ``components`` principal components (fitted on the images alone,
    never the labels) and standardised. 20 components keep 89% of the pixel
    variance and a one-vs-rest ridge classifier on them is 93% accurate
    against 94% on all 64 pixels, while each arm's matrix shrinks from 65x65
    to 21x21: fewer parameters to learn from bandit feedback, and faster.

    Parameters
    ----------
    components : int, default 20
        Principal components kept (1-64).

    Notes
    -----
    Needs scikit-learn (the ``eval`` extra), imported on first use only, so
    :mod:`bandits` does not depend on it.
    """

    name = "digits"
    description = "load_digits, 10 arms, reward 1 for the true class"
    n_arms = 10

    def __init__(self, components: int = 20) -> None:
        self.dim = components
        self._data: tuple[np.ndarray, np.ndarray] | None = None

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """``(1797, components)`` standardised features and ``(1797,)`` labels."""
        if self._data is None:
            from sklearn.datasets import load_digits  # optional: the eval extra

            pixels, labels = load_digits(return_X_y=True)
            centred = pixels / 16.0 - (pixels / 16.0).mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            z = centred @ vt[: self.dim].T
            self._data = (z / z.std(axis=0), labels.astype(np.intp))
        return self._data

    def episode(self, rounds: int, rng: np.random.Generator) -> Episode:
        """Draw ``rounds`` images with replacement; rewards are the one-hot labels."""
        z, labels = self.data()
        pick = rng.integers(labels.size, size=rounds)
        onehot = np.eye(self.n_arms)[labels[pick]]
        return Episode(z[pick], onehot, onehot)


ENVIRONMENTS: dict[str, type[Environment]] = {
    "synthetic": SyntheticLinear,
    "digits": Digits,
    "drifting": Drifting,
}
