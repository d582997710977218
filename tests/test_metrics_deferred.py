"""Histogram observations deferred on the request path (app/metrics/deferred.py) arrive whole."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from app.metrics.deferred import DeferredObservations
from tests.conftest import poll


def test_observations_wait_for_a_flush_and_land_in_their_buckets():
    registry = CollectorRegistry()
    family = Histogram("h_seconds", "test", ["route"], buckets=(0.01, 0.1), registry=registry)
    deferred = DeferredObservations(seconds=3600.0)  # the flusher never runs in this test
    for seconds in (0.005, 0.05, 0.5):
        deferred.observe(family.labels("/choose"), seconds)
    labels = {"route": "/choose"}
    assert registry.get_sample_value("h_seconds_count", labels) == 0.0
    deferred.flush()
    assert registry.get_sample_value("h_seconds_count", labels) == 3.0
    assert registry.get_sample_value("h_seconds_bucket", labels | {"le": "0.01"}) == 1.0
    assert registry.get_sample_value("h_seconds_bucket", labels | {"le": "0.1"}) == 2.0
    assert abs(registry.get_sample_value("h_seconds_sum", labels) - 0.555) < 1e-9
    deferred.flush()  # nothing pending: nothing written twice
    assert registry.get_sample_value("h_seconds_count", labels) == 3.0


def test_the_flusher_writes_without_being_asked():
    registry = CollectorRegistry()
    family = Histogram("h_seconds", "test", registry=registry)
    deferred = DeferredObservations(seconds=0.05)
    for _ in range(5):
        deferred.observe(family, 0.001)
    poll(lambda: registry.get_sample_value("h_seconds_count") == 5.0, timeout=5.0)
