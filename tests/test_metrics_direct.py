"""Counter increments written straight to the multiprocess file (app/metrics/direct.py)."""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, Counter, values
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

from app.metrics.direct import DirectCounter


@pytest.fixture
def multiprocess(tmp_path, monkeypatch):
    """Counters made in the test write files in ``tmp_path``, as under gunicorn."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
    return tmp_path


def summed(directory) -> dict[tuple, float]:
    """Every counter sample of every process's file in ``directory``, summed."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(directory))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
    }


def test_direct_increments_read_back_as_inc_writes_them(multiprocess):
    direct_family = Counter("direct", "t", ["experiment"], registry=None)
    twin_family = Counter("twin", "t", ["experiment"], registry=None)
    counters = {e: DirectCounter(direct_family.labels(e)) for e in ("a", "b")}
    for i in range(25):
        experiment = "a" if i % 5 else "b"
        counters[experiment].inc()
        twin_family.labels(experiment).inc()
    found = summed(multiprocess)
    for experiment, count in (("a", 20.0), ("b", 5.0)):
        labels = (("experiment", experiment),)
        assert found[("direct_total", labels)] == count
        assert found[("twin_total", labels)] == count


def test_a_file_that_grows_after_binding_keeps_every_increment(multiprocess):
    family = Counter("grown", "t", ["experiment"], registry=None)
    counter = DirectCounter(family.labels("first"))
    counter.inc()
    # enough other series to outgrow the file's first 64 KiB: it is mapped again
    for i in range(2000):
        family.labels(f"other-{i:04d}").inc()
    counter.inc()
    counter.inc()
    assert summed(multiprocess)[("grown_total", (("experiment", "first"),))] == 3.0


def test_a_forked_child_counts_in_its_own_file(multiprocess):
    family = Counter("forked", "t", ["experiment"], registry=None)
    counter = DirectCounter(family.labels("a"))
    counter.inc()  # bound in the parent
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(3):
                counter.inc()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    counter.inc()
    by_file = {}
    for name in os.listdir(multiprocess):
        store = MmapedDict(str(multiprocess / name), read_mode=True)
        by_file[name] = {key: value for key, value, _ in store.read_all_values()}
        store.close()
    key = next(k for k in by_file[f"counter_{os.getpid()}.db"] if "forked_total" in k)
    assert by_file[f"counter_{os.getpid()}.db"][key] == 2.0  # the child wrote none of its own
    assert by_file[f"counter_{pid}.db"][key] == 3.0
    assert summed(multiprocess)[("forked_total", (("experiment", "a"),))] == 5.0


def test_without_multiprocess_mode_it_is_the_childs_own_inc():
    registry = CollectorRegistry()
    family = Counter("plain", "t", registry=registry)
    counter = DirectCounter(family)
    for _ in range(4):
        counter.inc()
    assert registry.get_sample_value("plain_total") == 4.0
