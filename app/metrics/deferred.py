"""Histogram observations noted on the request path and written once a second."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from prometheus_client import Histogram

FLUSH_SECONDS = 1.0

log = logging.getLogger(__name__)


class DeferredObservations:
    """Histogram observations kept in a list until the next flush writes them.

    In multiprocess mode an observation is two locked writes to a
    memory-mapped file (the sum and a bucket). Made inside a request, after
    the scoring has filled the caches, they cost about five times what the
    same writes cost back to back at a flush (9 µs against under 2 µs
    per /choose, bench/metrics_overhead.py's experiment): so the request path
    only appends. ``GET /metrics`` flushes its own process first; another
    process's observations reach a scrape at most ``seconds`` late and are
    flushed at exit. A process killed outright loses at most ``seconds`` of
    them; counters are not deferred, so counts survive a kill exactly.
    """

    def __init__(self, seconds: float = FLUSH_SECONDS) -> None:
        self.seconds = seconds
        self._pending: list[tuple[Histogram, float]] = []
        self._lock = threading.Lock()
        self._flusher_pid: int | None = None

    def observe(self, histogram: Histogram, value: float) -> None:
        """Observe ``value`` in ``histogram`` (or a labelled child of one) at the next flush."""
        if self._flusher_pid != os.getpid():  # first use in this (possibly forked) process
            self._start_flusher()
        with self._lock:
            self._pending.append((histogram, value))

    def flush(self) -> None:
        """Write every pending observation now."""
        with self._lock:
            pending, self._pending = self._pending, []
        for histogram, value in pending:
            histogram.observe(value)

    def _start_flusher(self) -> None:
        self._flusher_pid = os.getpid()
        threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()
        atexit.register(self.flush)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.seconds)
            try:
                self.flush()
            except Exception:  # a failed write must not stop the writes for good
                log.exception("writing the pending metric observations failed")
