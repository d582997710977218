"""Slow clients cannot starve the API (issue 17).

gunicorn and ``banditd worker`` run as real processes, gunicorn with
gunicorn.conf.py as ``make run`` starts it. For 15 s, 8 connections send a
request one byte a second (4 dribble their headers, 4 send headers at once and
dribble a body; one the server closes is opened again at once) while probes
alternate ``GET /healthz`` and ``POST /choose`` every 50 ms on new connections:
at least 99% of them must answer 200 within 1 s. With the sync workers the
service had before gunicorn.conf.py, 6% did (bench/slow_clients.py
``--setup sync``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from bench.slow_clients import Target, siege
from tests.conftest import API_KEY
from tests.service_processes import running_service

pytestmark = pytest.mark.e2e

EXPERIMENTS_TOML = """\
# written by tests/test_slow_clients.py
[experiments.slow]
policy = "linucb"
arms = ["a", "b", "c"]
reward = { default = 0.0, window_seconds = 600, min = 0.0, max = 1.0 }

[experiments.slow.features]
categorical = { city = ["berlin", "paris"] }
"""
DRIBBLERS = 8
SECONDS = 15.0  # the duration
INTERVAL = 0.05  # between probes: about 280 in the 14 s after the dribblers' head start
HEAD_START = 1.0


@pytest.fixture
def service(tmp_path: Path, engine, redis_client, request):
    with running_service(EXPERIMENTS_TOML, tmp_path, request) as svc:
        yield svc


def test_slow_clients_leave_healthz_and_choose_answering_within_1s(service):
    host, port = service.base_url.removeprefix("http://").split(":")
    body = orjson.dumps({"experiment": "slow", "context": {"city": "berlin"}})
    result = asyncio.run(
        siege(
            Target(host, int(port), API_KEY, body),
            dribblers=DRIBBLERS,
            seconds=SECONDS,
            interval=INTERVAL,
            head_start=HEAD_START,
        )
    )

    # the slow clients were there the whole time: connected, never refused, a byte a second
    for kind, seen in result["dribbled"].items():
        assert seen["refused"] == 0, (kind, seen)
        assert seen["connections"] >= DRIBBLERS // 2, (kind, seen)
        assert seen["bytes_sent"] >= DRIBBLERS // 2 * (SECONDS - 2), (kind, seen)
    probes = result["probes"]
    assert probes["all"]["probes"] >= 0.9 * (SECONDS - HEAD_START) / INTERVAL, probes
    for path in ("all", "/healthz", "/choose"):
        assert probes[path]["share_within_1s"] >= 0.99, (path, probes)
    assert service.gunicorn.poll() is None and service.worker.poll() is None
