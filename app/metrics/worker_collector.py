"""The worker's figures read from Redis and Postgres at scrape time.

Nothing here runs in the worker's loop: each scrape reads the streams and
leases in one pipelined Redis round trip (:func:`app.status.streams.read_streams`)
and the latest snapshots in one Postgres query. While Redis or Postgres is
away, ``banditd_redis_up`` or ``banditd_postgres_up`` is 0 and the figures
read from it are left out.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator

import redis
import sqlalchemy.exc
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from app.config_source import ConfigSource
from app.status.log_state import last_snapshots
from app.status.streams import read_streams

log = logging.getLogger(__name__)


class StreamCollector(Collector):
    """Backlog, lease, watermark, dead letters and snapshot figures of every experiment.

    ``experiments`` names the experiments to report: the configured ones and
    the retired ones the worker still drains.
    """

    def __init__(
        self,
        client: redis.Redis,
        engine: Engine,
        config: ConfigSource,
        consumer: str,
        experiments: Callable[[], Iterable[str]],
    ) -> None:
        self.client = client
        self.engine = engine
        self.config = config
        self.consumer = consumer
        self.experiments = experiments

    def collect(self) -> Iterator[Metric]:
        """The figures as they are now."""
        names = sorted(set(self.experiments()))
        yield _gauge(
            "banditd_config_rejected",
            "1 while the worker's last look at the experiments file found it invalid.",
            1 if self.config.last_error else 0,
        )
        yield from self._redis_figures(names)
        yield from self._postgres_figures(names)

    def _redis_figures(self, names: list[str]) -> Iterator[Metric]:
        try:
            states = read_streams(self.client, names)
        except redis.RedisError as exc:
            log.debug("metrics: Redis unavailable: %s", exc)
            yield _gauge("banditd_redis_up", "1 if the worker's metrics read Redis.", 0)
            return
        yield _gauge("banditd_redis_up", "1 if the worker's metrics read Redis.", 1)
        families = {
            "backlog": GaugeMetricFamily(
                "banditd_stream_backlog",
                "Entries in the experiment's stream not yet learned and logged.",
                labels=["experiment"],
            ),
            "oldest": GaugeMetricFamily(
                "banditd_stream_oldest_age_seconds",
                "Age of the oldest entry not yet learned (0 when the stream is empty).",
                labels=["experiment"],
            ),
            "learned": GaugeMetricFamily(
                "banditd_learned_entry_age_seconds",
                "Age of the last stream entry the saved model learned from.",
                labels=["experiment"],
            ),
            "held": GaugeMetricFamily(
                "banditd_lease_held",
                "1 if this worker holds the experiment's lease.",
                labels=["experiment"],
            ),
            "holder": GaugeMetricFamily(
                "banditd_lease_holder_present",
                "1 if some worker holds the experiment's lease (as seen in Redis).",
                labels=["experiment"],
            ),
            "dead": GaugeMetricFamily(
                "banditd_dead_letters",
                "Entries in the experiment's dead letters now.",
                labels=["experiment"],
            ),
        }
        dead_ever = GaugeMetricFamily(
            "banditd_dead_lettered",
            "Entries ever moved to the dead letters (a counter kept in Redis).",
            labels=["experiment"],
        )
        for s in states:
            labels = [s.experiment]
            families["backlog"].add_metric(labels, s.backlog)
            families["oldest"].add_metric(labels, s.oldest_age_seconds or 0.0)
            if s.learned_age_seconds is not None:
                families["learned"].add_metric(labels, s.learned_age_seconds)
            families["held"].add_metric(labels, 1 if s.lease_holder == self.consumer else 0)
            families["holder"].add_metric(labels, 1 if s.lease_holder else 0)
            families["dead"].add_metric(labels, s.dead_letters)
            dead_ever.add_metric(labels, s.dead_lettered_ever)
        yield from families.values()
        yield dead_ever

    def _postgres_figures(self, names: list[str]) -> Iterator[Metric]:
        try:
            taken = last_snapshots(self.engine, names)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            log.debug("metrics: Postgres unavailable: %s", exc)
            yield _gauge("banditd_postgres_up", "1 if the worker's metrics read Postgres.", 0)
            return
        yield _gauge("banditd_postgres_up", "1 if the worker's metrics read Postgres.", 1)
        snapshots = GaugeMetricFamily(
            "banditd_snapshot_timestamp_seconds",
            "When the experiment's latest model snapshot was taken (Unix time).",
            labels=["experiment"],
        )
        for name, at in sorted(taken.items()):
            snapshots.add_metric([name], at.timestamp())
        yield snapshots


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
