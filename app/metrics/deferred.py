"""Histogram observations queued on the request path and written once a second."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections import deque
from typing import Callable

from prometheus_client import Histogram

FLUSH_SECONDS = 1.0

log = logging.getLogger(__name__)


class _Tally:
    """Observations of one histogram in one flush: a count per bucket and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0


class DeferredObservations:
    """Histogram observations queued on the request path until the next flush writes them.

    In multiprocess mode an observation is two locked writes to a
    memory-mapped file (the sum and a bucket). Made inside a request, after
    the scoring has filled the caches, even counting it into its bucket in
    memory cost 2.3 µs per /choose (bench/metrics_overhead.py's experiment):
    so the request path only appends the value to a queue (deque appends
    and pops are atomic, so it takes no lock), and a flush sorts the queued
    values into buckets and writes each bucket's increment once, whatever
    the number of requests. ``GET /metrics`` flushes its own process first;
    another process's observations reach a scrape at most ``seconds`` late
    and are flushed at exit. A process killed outright loses at most
    ``seconds`` of them; counters are not deferred, so counts survive a kill
    exactly.

    Whatever else is worth doing once a second rather than per request
    (``every_flush``) runs after each flush.

    The flush writes the histogram's own sum and bucket values (prometheus-client's
    ``_sum``, ``_buckets`` and ``_upper_bounds``, as in 0.26);
    tests/test_metrics_deferred.py checks the result against ``observe``.
    """

    def __init__(self, seconds: float = FLUSH_SECONDS) -> None:
        self.seconds = seconds
        self._queue: deque[tuple[Histogram, float]] = deque()
        self._flush_lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._flusher_started = False
        # a forked child (gunicorn --preload) inherits no thread: it starts its own
        # flusher on first use (checked without a getpid call on every observation)
        this = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forked(this))

    def observe(self, histogram: Histogram, value: float) -> None:
        """Observe ``value`` in ``histogram`` (or a labelled child of one) at the next flush."""
        if not self._flusher_started:
            self._start_flusher()
        self._queue.append((histogram, value))

    def every_flush(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after every flush (in the flushing thread)."""
        self._callbacks.append(callback)

    def flush(self) -> None:
        """Write every pending observation now, then run the ``every_flush`` callbacks."""
        with self._flush_lock:
            tallies: dict[Histogram, _Tally] = {}
            pop = self._queue.popleft
            while True:
                try:
                    histogram, value = pop()
                except IndexError:
                    break
                tally = tallies.get(histogram)
                if tally is None:
                    tally = tallies[histogram] = _Tally(histogram._upper_bounds)
                # the first bucket whose upper bound is at least value, as observe() picks
                tally.counts[bisect_left(tally.bounds, value)] += 1
                tally.sum += value
            for histogram, tally in tallies.items():
                histogram._sum.inc(tally.sum)
                for bucket, count in zip(histogram._buckets, tally.counts):
                    if count:
                        bucket.inc(count)
            for callback in self._callbacks:
                callback()

    def _start_flusher(self) -> None:
        self._flusher_started = True
        threading.Thread(target=self._flush_forever, name="metrics-flush", daemon=True).start()
        atexit.register(self.flush)

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.seconds)
            try:
                self.flush()
            except Exception:  # a failed write must not stop the writes for good
                log.exception("writing the pending metric observations failed")


def _forked(ref: weakref.ref) -> None:
    deferred = ref()
    if deferred is not None:
        deferred._flusher_started = False
        deferred._flush_lock = threading.Lock()  # a lock held at the fork would stay held
        deferred._queue = deque()  # the parent's, which the parent writes
