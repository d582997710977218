"""``banditd worker``'s metrics server: its own HTTP port, on a thread of the worker."""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import prometheus_client
from prometheus_client import start_http_server

from app.metrics import worker as worker_metrics
from app.metrics.worker_collector import StreamCollector
from app.services import Services

log = logging.getLogger(__name__)


def serve(
    services: Services,
    consumer: str,
    experiments: Callable[[], Iterable[str]],
    *,
    port: int,
    address: str = "0.0.0.0",
) -> int | None:
    """Serve the worker's metrics on ``port`` (0: not at all); the port, or None if not served.

    A port already in use is logged and the worker goes on without metrics:
    a second worker on one machine needs its own ``BANDITD_WORKER_METRICS_PORT``.
    """
    if port <= 0:
        return None
    prometheus_client.disable_created_metrics()  # a counter's start time says nothing here
    registry = worker_metrics.REGISTRY
    registry.register(
        StreamCollector(services.redis, services.engine, services.config, consumer, experiments)
    )
    try:
        server, _thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        log.warning("worker metrics not served: port %d: %s", port, exc)
        return None
    log.info("worker metrics on http://%s:%d/metrics", address, port)
    return server.server_port


def serve_for(worker, services: Services, settings) -> int | None:
    """``serve`` the metrics of ``worker`` as the settings say (``BANDITD_METRICS``,
    ``BANDITD_WORKER_METRICS_PORT``): the configured experiments and the streams it owns."""
    if not settings.metrics_enabled:
        return None

    def experiments() -> set[str]:
        return set(services.config.current().experiments) | worker.owned.copy()

    return serve(services, worker.consumer, experiments, port=settings.worker_metrics_port)
