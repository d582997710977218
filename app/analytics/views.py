"""Keep the analysts' materialised views fresh.

The daily views (``arm_daily``, ``experiment_daily``, ``lift_daily``) read
``daily_cells``, a materialised view of counts and sums per experiment, UTC
day, arm, group and slot (migration 0004). Why materialised: over 5 million
impressions of one experiment the same aggregation as a plain view took
4.9-6 s for 30 days (it joins every impression to its decision and reward),
over the 2 s the daily views must answer in; from the cells they answer in
about 2 ms. The price is staleness and a refresh that reads the whole log:
about 7 s at 5 million impressions on the 2-core box, growing linearly.

How often: every 5 minutes (:data:`REFRESH_SECONDS`) from one worker, so the
daily views lag the log by at most that plus the refresh; the refresh is
``CONCURRENTLY``, so readers are never blocked, and an advisory lock lets
several workers call it without refreshing twice at once.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.engine import Engine

from app.periodic import PeriodicTask

log = logging.getLogger(__name__)

MATERIALISED = ("daily_cells",)
REFRESH_SECONDS = 300.0
_LOCK = 0x62616E6469747631  # pg advisory lock key: "banditv1"


def refresh_analyst_views(engine: Engine) -> bool:
    """Refresh the materialised views behind the daily views, without blocking readers.

    Returns False, doing nothing, if another process is refreshing them now.
    """
    with engine.begin() as conn:
        locked = conn.execute(
            sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _LOCK}
        ).scalar()
        if not locked:
            return False
        for view in MATERIALISED:
            conn.execute(sqlalchemy.text(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}"))
    return True


class ViewRefresher:
    """Refreshes the analysts' views every ``every_seconds`` on a thread of its own.

    The worker calls :meth:`tick` once a loop; a refresh takes seconds on a big
    log, so it runs beside the worker's own work, at most one at a time, and a
    failure (Postgres away) is logged and tried again at the next due time.
    The first tick refreshes: the views may be stale after a restart.
    """

    def __init__(
        self,
        engine: Engine,
        every_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self._task = PeriodicTask(
            self._refresh, every_seconds, clock=clock, thread_name="view-refresh"
        )

    @property
    def every_seconds(self) -> float:
        """How often the views are refreshed (<= 0: never)."""
        return self._task.every_seconds

    @every_seconds.setter
    def every_seconds(self, seconds: float) -> None:
        self._task.every_seconds = seconds

    def tick(self) -> None:
        """Start a refresh if one is due and none is running."""
        self._task.tick()

    def _refresh(self) -> None:
        started = time.monotonic()
        try:
            if refresh_analyst_views(self.engine):
                log.info("refreshed the analysts' views in %.1f s", time.monotonic() - started)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            log.warning("could not refresh the analysts' views (%s); trying again later", exc)

    def wait(self) -> None:
        """Wait for the refresh in progress, if any."""
        self._task.wait()

    def close(self) -> None:
        """Wait for a refresh in progress, then stop the thread."""
        self._task.close()
