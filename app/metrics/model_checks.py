"""A model store that times the API's model checks and notes when each one succeeded."""

from __future__ import annotations

import time

from app.metrics.families import ApiFamilies
from app.model_store import ModelStore


class ObservedModelStore:
    """``store`` as the API's model cache uses it, with its checks measured.

    ``generation`` (one Redis GET, what the cache asks every
    ``BANDITD_MODEL_REFRESH_SECONDS``) is the API's Redis round trip, and its
    success the moment the cache confirmed what the saved model is. Every
    other attribute is the store's own.
    """

    def __init__(self, store: ModelStore, families: ApiFamilies) -> None:
        self._store = store
        self._roundtrip = families.redis_seconds
        self._checked = families.model_checked

    def generation(self, experiment: str):
        """The store's ``generation``, timed; notes the time of a successful check."""
        started = time.perf_counter()
        value = self._store.generation(experiment)
        self._roundtrip.observe(time.perf_counter() - started)
        self._checked.labels(experiment).set(time.time())
        return value

    def __getattr__(self, name: str):
        return getattr(self._store, name)
