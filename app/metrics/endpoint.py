"""``GET /metrics``: the API's metrics in Prometheus' text format (no API key)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app.metrics.derived import ResponsesWithDerived

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics_page() -> Response:
    """Every API process's figures, summed (multiprocess mode), or this process's."""
    families = current_app.extensions["banditd_metrics"]
    families.deferred.flush()  # this process's latencies are never late; others' within 1 s
    directory = current_app.extensions["banditd"].settings.metrics_multiproc_dir
    source = MultiProcessCollector(None, path=directory) if directory else families.registry
    registry = CollectorRegistry()
    registry.register(ResponsesWithDerived(source))
    # the 0.0.4 text format: what every Prometheus 2 (Debian 12 ships 2.42) reads
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
