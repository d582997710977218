"""Histogram observations deferred on the request path (app/metrics/deferred.py) arrive whole."""

from __future__ import annotations

import os

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


def test_a_flush_writes_what_observing_each_value_writes():
    bounds = (0.001, 0.0025, 0.005, 0.01)
    deferred_registry, direct_registry = CollectorRegistry(), CollectorRegistry()
    deferred_family = Histogram("h_seconds", "t", ["r"], buckets=bounds, registry=deferred_registry)
    direct_family = Histogram("h_seconds", "t", ["r"], buckets=bounds, registry=direct_registry)
    deferred = DeferredObservations(seconds=3600.0)
    # values on the bounds themselves, between them, below the first and above the last
    values = [0.0, 0.001, 0.0010001, 0.0025, 0.003, 0.005, 0.01, 0.02, 7.5] * 3
    for route in ("/choose", "/reward"):
        for v in values if route == "/choose" else values[:4]:
            deferred.observe(deferred_family.labels(route), v)
            direct_family.labels(route).observe(v)
    deferred.flush()

    def found(registry):
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in registry.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        }

    assert found(deferred_registry) == found(direct_registry)
    assert deferred_registry.get_sample_value("h_seconds_count", {"r": "/choose"}) == 27


def test_a_forked_child_flushes_with_a_flusher_of_its_own(tmp_path):
    registry = CollectorRegistry()
    family = Histogram("h_seconds", "test", registry=registry)
    deferred = DeferredObservations(seconds=0.05)
    deferred.observe(family, 0.001)  # the parent's flusher runs from here
    poll(lambda: registry.get_sample_value("h_seconds_count") == 1.0, timeout=5.0)
    result = tmp_path / "child"
    pid = os.fork()
    if pid == 0:  # the child: no flusher thread came with the fork
        try:
            deferred.observe(family, 0.001)
            poll(lambda: registry.get_sample_value("h_seconds_count") == 2.0, timeout=5.0)
        except BaseException:
            pass  # the parent sees the count that was reached
        finally:
            result.write_text(str(registry.get_sample_value("h_seconds_count")))
            os._exit(0)
    os.waitpid(pid, 0)
    assert result.read_text() == "2.0"


def test_a_forked_child_does_not_write_what_its_parent_observed(tmp_path):
    """Pending at the fork, an observation is the parent's to write: in multiprocess mode
    both processes' files are summed, so a child writing it too would count it twice."""
    registry = CollectorRegistry()
    family = Histogram("h_seconds", "test", registry=registry)
    deferred = DeferredObservations(seconds=3600.0)  # written only when flushed here
    deferred.observe(family, 0.001)
    result = tmp_path / "child"
    pid = os.fork()
    if pid == 0:
        try:
            deferred.observe(family, 0.001)
            deferred.flush()
        finally:
            result.write_text(str(registry.get_sample_value("h_seconds_count")))
            os._exit(0)
    os.waitpid(pid, 0)
    assert result.read_text() == "1.0"
    deferred.flush()
    assert registry.get_sample_value("h_seconds_count") == 1.0
