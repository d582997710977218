"""The worker's metrics: rewards learned by kind, and what a scrape reads from Redis/Postgres."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import worker as worker_metrics
from app.metrics.worker_collector import StreamCollector
from app.services import build_services
from app.worker import Worker
from tests.conftest import choose, reward


def learned(experiment: str, kind: str) -> float:
    value = worker_metrics.REGISTRY.get_sample_value(
        "banditd_learned_total", {"experiment": experiment, "kind": kind}
    )
    return value or 0.0


def scrape(collector: StreamCollector) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_learned_counts_each_kind_once_acknowledged(client, worker, clock):
    before = {k: learned("home_feed", k) for k in ("explicit", "default", "late")}
    shown = [choose(client, context={"hour": 9}).json for _ in range(4)]
    for d in shown[:3]:
        assert reward(client, d["decision_id"], d["arms"][0]["arm"], 1).status_code == 202
    worker.run(until_idle=True)
    assert learned("home_feed", "explicit") - before["explicit"] == 3
    assert learned("home_feed", "default") - before["default"] == 0
    # the fourth decision's window closes: its default reward is learned
    clock.advance(901)
    worker.run(until_idle=True)
    assert learned("home_feed", "default") - before["default"] == 1
    # a reward after its window: logged as late, counted as late
    assert reward(client, shown[3]["decision_id"], shown[3]["arms"][0]["arm"], 1).status_code == 409
    worker.run(until_idle=True)
    assert learned("home_feed", "late") - before["late"] == 1
    assert learned("home_feed", "explicit") - before["explicit"] == 3


def test_scrape_reads_backlog_and_lease_from_redis(client, settings, worker):
    services = build_services(settings)
    collector = StreamCollector(
        services.redis,
        services.engine,
        services.config,
        worker.consumer,
        lambda: services.config.current().experiments,
    )
    for _ in range(5):
        assert choose(client, context={"hour": 1}).status_code == 200
    found = scrape(collector)
    # 5 decisions and the config version, not yet learned; no worker has run yet
    assert found[("banditd_stream_backlog", (("experiment", "home_feed"),))] == 6
    assert found[("banditd_stream_oldest_age_seconds", (("experiment", "home_feed"),))] >= 0
    assert found[("banditd_lease_holder_present", (("experiment", "home_feed"),))] == 0
    assert found[("banditd_redis_up", ())] == 1
    assert found[("banditd_postgres_up", ())] == 1
    worker.run(until_idle=True)
    found = scrape(collector)
    assert found[("banditd_stream_backlog", (("experiment", "home_feed"),))] == 0
    assert found[("banditd_lease_held", (("experiment", "home_feed"),))] == 1
    assert found[("banditd_lease_holder_present", (("experiment", "push_copy"),))] == 1
    assert found[("banditd_learned_entry_age_seconds", (("experiment", "home_feed"),))] >= 0
    services.engine.dispose()


def test_scrape_without_redis_says_so(settings, worker):
    services = build_services(settings)
    services.redis.connection_pool.connection_kwargs["port"] = 1  # nothing listens there
    services.redis.connection_pool.reset()
    collector = StreamCollector(
        services.redis,
        services.engine,
        services.config,
        worker.consumer,
        lambda: ["home_feed"],
    )
    found = scrape(collector)
    assert found[("banditd_redis_up", ())] == 0
    assert ("banditd_stream_backlog", (("experiment", "home_feed"),)) not in found
    services.engine.dispose()


def test_postgres_writes_of_the_worker_are_timed(client, settings, clock):
    def writes() -> float:
        count = worker_metrics.REGISTRY.get_sample_value(
            "banditd_worker_postgres_write_seconds_count"
        )
        return count or 0.0

    before = writes()
    services = worker_metrics.timed_services(build_services(settings))
    worker = Worker.from_services(services, clock=clock, block_ms=10)
    try:
        assert choose(client, context={"hour": 4}).status_code == 200
        worker.run(until_idle=True)
    finally:
        worker.close()
    assert writes() - before >= 1
