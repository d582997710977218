"""A task the worker runs every so often on a thread of its own, beside its own work."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class PeriodicTask(Generic[T]):
    """Runs ``task`` every ``every_seconds`` on its own thread, at most one run at a time.

    The owner calls :meth:`tick` once a loop; the first tick runs the task at
    once. ``every_seconds`` <= 0 never runs it. ``task`` handles its own
    failures: what it raises anyway is logged at ERROR (the worker waits for
    no run, so it would go unseen) and kept for :meth:`wait`.
    """

    def __init__(
        self,
        task: Callable[[], T],
        every_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        thread_name: str = "periodic",
    ) -> None:
        self.task = task
        self.every_seconds = every_seconds
        self.clock = clock
        self.name = thread_name
        self._due = clock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._running: Future | None = None

    def tick(self) -> None:
        """Start the task if it is due and not running."""
        if self.every_seconds <= 0 or self.clock() < self._due:
            return
        if self._running is not None and not self._running.done():
            return
        self._due = self.clock() + self.every_seconds
        self._running = self._pool.submit(self.task)
        self._running.add_done_callback(self._log_failure)

    def _log_failure(self, run: Future) -> None:
        failure = run.exception()
        if failure is not None:
            log.error(
                "%s failed, will run again in %g s",
                self.name,
                self.every_seconds,
                exc_info=failure,
            )

    def wait(self) -> T | None:
        """The result of the run in progress or last done (None if it never ran)."""
        return None if self._running is None else self._running.result()

    def close(self) -> None:
        """Wait for a run in progress, then stop the thread."""
        self._pool.shutdown(wait=True)
