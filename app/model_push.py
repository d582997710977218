"""Hear the worker's saves, so an API process refreshes a model at once.

The worker publishes the name of each experiment whose parameters it saved
(:meth:`ModelStore.save`). Each API process listens on a background thread
(a greenlet under gevent) and fetches the arms that changed into that
experiment's cached tables at once, so the next /choose neither waits for them
nor scores with older ones. A message lost while the
connection is down costs nothing but time: the cache's periodic check
(``BANDITD_MODEL_REFRESH_SECONDS``) still finds the change.
"""

from __future__ import annotations

import logging
import threading

import redis

from app import keys
from app.cluster.client import UNAVAILABLE
from app.model_cache import ModelCache

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # between reconnection attempts while Redis is away


class SaveListener:
    """A daemon thread that refreshes the ``cache`` tables the saves channel names."""

    def __init__(self, client: redis.Redis, cache: ModelCache) -> None:
        self.client = client
        self.cache = cache
        self.heard = 0  # messages handled: lets a test or an operator see it is alive
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-saves", daemon=True)

    def start(self) -> "SaveListener":
        """Start listening; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (within about a second)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
            except (*UNAVAILABLE, OSError) as exc:  # Redis away or failing over
                log.info("model saves channel unavailable (%s); periodic checks only", exc)
            except Exception:  # never let the listener die: the periodic check is slower
                log.exception("listening for model saves failed; listening again")
            # every table may have missed a save meanwhile: check them all now
            self.cache.invalidate_all()
            self._stop.wait(RETRY_SECONDS)

    def _listen(self) -> None:
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(keys.models_saved())
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    # (re)subscribed: redis-py reconnects on its own after a lost
                    # connection, and what was published meanwhile is lost
                    self.cache.invalidate_all()
                    continue
                data = message["data"]
                self.cache.refresh(data.decode() if isinstance(data, bytes) else str(data))
                self.heard += 1
        finally:
            pubsub.close()
