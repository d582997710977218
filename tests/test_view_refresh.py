"""The worker keeps the analysts' materialised views fresh, on a schedule, beside its work."""

from __future__ import annotations

from app.analytics.views import ViewRefresher
from app.services import build_services
from app.worker import Worker
from tests.conftest import choose, rows


def daily_impressions(engine) -> int:
    """Impressions the (materialised) daily views count."""
    total = rows(engine, "SELECT coalesce(sum(impressions), 0) AS n FROM experiment_daily")
    return int(total[0]["n"])


def test_views_are_refreshed_when_due_and_not_before(client, worker, engine):
    worker.views.every_seconds = 0  # this test drives its own refresher
    now = [1000.0]
    refresher = ViewRefresher(engine, every_seconds=60, clock=lambda: now[0])
    for _ in range(3):
        choose(client, context={"hour": 1})
    worker.run(until_idle=True)
    assert daily_impressions(engine) == 0, "stale until refreshed"

    refresher.tick()  # due at once: the views may be stale after a restart
    refresher.wait()
    assert daily_impressions(engine) == 3

    choose(client, context={"hour": 2})
    worker.run(until_idle=True)
    now[0] += 30
    refresher.tick()
    refresher.wait()
    assert daily_impressions(engine) == 3, "not due yet"
    now[0] += 31
    refresher.tick()
    refresher.wait()
    assert daily_impressions(engine) == 4
    refresher.close()


def test_a_starting_worker_refreshes_on_its_first_pass(client, worker, settings, clock, engine):
    worker.views.every_seconds = 0
    choose(client, context={"hour": 1})
    worker.run(until_idle=True)
    worker.close()
    assert daily_impressions(engine) == 0

    services = build_services(settings)
    restarted = Worker.from_services(services, clock=clock, views_refresh_seconds=60)
    restarted.step()
    restarted.views.wait()
    assert daily_impressions(engine) == 1
    restarted.close()
    services.engine.dispose()
