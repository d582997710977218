"""The API's in-process copy of arm parameters, refreshed by version.

Fetching every arm's matrices from Redis on each request would cost more than
all the scoring. Instead each API process keeps stacked arrays per experiment
and, at most every ``refresh_seconds``, asks Redis which arms have a newer
version and fetches only those.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from app.config import Experiment
from app.model_store import ModelStore
from bandits import ScoringState


@dataclass
class _Entry:
    arms: tuple[str, ...]
    state: ScoringState
    versions: dict[str, int] = field(default_factory=dict)
    checked_at: float = float("-inf")


def prior_scoring_state(n_arms: int, dim: int, ridge: float) -> ScoringState:
    """Choosing parameters of arms that have learned nothing yet."""
    return ScoringState(
        A_inv=np.broadcast_to(np.eye(dim) / ridge, (n_arms, dim, dim)).copy(),
        theta=np.zeros((n_arms, dim)),
        n=np.zeros(n_arms),
        successes=np.zeros(n_arms),
        failures=np.zeros(n_arms),
    )


class ModelCache:
    """Stacked, recent-enough choosing parameters of each experiment."""

    def __init__(
        self,
        store: ModelStore,
        *,
        refresh_seconds: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()

    def scoring_state(self, experiment: Experiment) -> ScoringState:
        """Parameters of ``experiment.arms``, in that order, at most ``refresh_seconds`` old."""
        key = (experiment.name, experiment.model_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.arms != experiment.arms:
                entry = _Entry(
                    experiment.arms,
                    prior_scoring_state(
                        len(experiment.arms), experiment.features.dim, experiment.ridge
                    ),
                )
                self._entries[key] = entry
            now = self.clock()
            if now - entry.checked_at >= self.refresh_seconds:
                self._refresh(experiment, entry)
                entry.checked_at = now
            return entry.state

    def _refresh(self, experiment: Experiment, entry: _Entry) -> None:
        latest = self.store.versions(experiment.name, experiment.model_id)
        changed = [a for a in entry.arms if latest.get(a, 0) != entry.versions.get(a, 0)]
        if not changed:
            return
        loaded = self.store.load_scoring(
            experiment.name, experiment.model_id, changed, experiment.features.dim
        )
        index = experiment.arm_index()
        state = entry.state
        for arm, params in loaded.items():
            i = index[arm]
            state.A_inv[i] = params.A_inv
            state.theta[i] = params.theta
            state.n[i] = params.n
            state.successes[i] = params.successes
            state.failures[i] = params.failures
            entry.versions[arm] = params.version
