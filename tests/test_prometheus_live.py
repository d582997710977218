"""A real Prometheus scrapes a live stack under load; every panel of the Grafana board runs.

gunicorn (2 web processes, gunicorn.conf.py) and ``banditd worker`` run as real
processes (tests/service_processes.py), Debian's Prometheus scrapes the API's
/metrics and the worker's metrics port every second and loads the alert rules.
Clients send /choose and /reward; meanwhile one web process is killed
(SIGKILL) and gunicorn replaces it. Then every PromQL expression of
ops/grafana/banditd.json runs through Prometheus' HTTP API.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, EXPERIMENTS_TOML, poll
from tests.service_processes import free_port, running_service, tail

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
BOARD = REPO / "ops" / "grafana" / "banditd.json"
ALERTS = REPO / "ops" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
CLIENTS = 4
# Panels that must show data under this load; the others may be empty (no 5xx,
# no default reward within the test, no snapshot, no alert firing).
MUST_HAVE_DATA = {
    "Decisions per second",
    "Rewards accepted per second",
    "Request latency p50 / p99 by route",
    "Error answers by route and code",
    "Stream backlog",
    "Oldest entry waiting to be learned",
    "Rewards learned per second by kind",
    "Worker batch size (p50, p99)",
    "Worker batch commit time (p50, p99)",
    "Worker Postgres write time (p50, p99)",
    "Lease held, by worker",
    "Lease changes (last hour)",
    "Model age per API process",
    "API Redis round trip (p50, p99)",
    "Smallest propensity shown",
    "Targets up",
    "Redis and Postgres reachable (worker)",
    "Config file rejected",
    "Dead letters",
}


class Load:
    """Clients sending /choose (and /reward for half the decisions) until stopped.

    ``pause`` holds every client between requests, so a process can be killed
    with no request in flight: each 200 counted here is then a decision the
    API counted, and the other way round.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.ok = 0  # /choose answered 200
        self.other: dict[str, int] = {}  # anything else, by status or error
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Semaphore(0)
        self._threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CLIENTS)]

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._running.set()
        for t in self._threads:
            t.join(timeout=20)

    def pause(self) -> None:
        """Return once every client waits between two requests."""
        self._running.clear()
        for _ in self._threads:
            assert self._idle.acquire(timeout=20), "a client did not pause"

    def resume(self) -> None:
        self._running.set()

    def _count(self, key: str) -> None:
        with self._lock:
            self.other[key] = self.other.get(key, 0) + 1

    def _client(self, number: int) -> None:
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {API_KEY}"
        # a connection per request, so that both web processes answer decisions
        http.headers["Connection"] = "close"
        sent = 0
        while not self._stop.is_set():
            if not self._running.is_set():
                self._idle.release()
                self._running.wait()
                continue
            sent += 1
            body = {"experiment": "home_feed", "context": {"hour": sent % 24}}
            if sent % 50 == 0:
                body["experiment"] = "no_such_experiment"  # an error answer, counted as one
            try:
                r = http.post(self.base_url + "/choose", json=body, timeout=10)
            except requests.RequestException as exc:
                self._count(type(exc).__name__)
                continue
            if r.status_code != 200:
                self._count(str(r.status_code))
                continue
            with self._lock:
                self.ok += 1
            if sent % 2:
                d = r.json()
                reward = {"decision_id": d["decision_id"], "arm": d["arms"][0]["arm"], "reward": 1}
                try:
                    http.post(self.base_url + "/reward", json=reward, timeout=10)
                except requests.RequestException as exc:
                    self._count("reward " + type(exc).__name__)
        http.close()


def start_prometheus(tmp_path: Path, api: str, worker: str) -> tuple[subprocess.Popen, str]:
    """Prometheus scraping ``api`` and ``worker`` (host:port) every second, with the alerts."""
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is missing: `make test` installs it (Debian package prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {"job_name": "banditd_api", "static_configs": [{"targets": [api]}]},
                    {"job_name": "banditd_worker", "static_configs": [{"targets": [worker]}]},
                ],
            }
        )
    )
    log = tmp_path / "prometheus.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"

    def ready():
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited: {tail(log)}")
        try:
            return requests.get(url + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    poll(ready, timeout=20, interval=0.1)
    return proc, url


def query(url: str, expr: str) -> list:
    """An instant query's result; fails the test on any error."""
    r = requests.get(url + "/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    return body["data"]["result"]


def deciding_processes(metrics_url: str) -> set[int]:
    """The pids of the web processes that answered a /choose (their model-check gauge)."""
    page = requests.get(metrics_url, timeout=10).text
    return {
        int(s.labels["pid"])
        for family in text_string_to_metric_families(page)
        for s in family.samples
        if s.name == "banditd_model_checked_timestamp_seconds"
    }


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the board, Grafana's variables filled in."""
    board = json.loads(BOARD.read_text())
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "10s").replace("$experiment", ".*")
            found.append((panel["title"], expr))
    return found


def test_prometheus_scrapes_the_stack_and_runs_every_panel(tmp_path, request, monkeypatch):
    worker_port = free_port()
    monkeypatch.setenv("BANDITD_WORKER_METRICS_PORT", str(worker_port))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with running_service(EXPERIMENTS_TOML, tmp_path, request) as svc:
        api = svc.base_url.removeprefix("http://")
        prometheus, url = start_prometheus(tmp_path, api, f"127.0.0.1:{worker_port}")
        try:
            poll(lambda: len(query(url, "up == 1")) == 2, timeout=15, interval=0.2)
            with Load(svc.base_url) as load:
                poll(lambda: load.ok >= 300, timeout=20, interval=0.05)
                load.pause()
                # both processes have answered decisions: the killed one's count must survive it
                deciding = deciding_processes(svc.url("/metrics")) & svc.web_workers()
                assert len(deciding) == 2, deciding
                killed = min(deciding)
                os.kill(killed, signal.SIGKILL)
                load.resume()  # the other process answers while gunicorn replaces this one
                poll(lambda: killed not in svc.web_workers(), timeout=10, interval=0.05)
                poll(lambda: len(svc.web_workers()) == 2, timeout=20, interval=0.05)
                at_kill = load.ok
                poll(lambda: load.ok >= at_kill + 300, timeout=20, interval=0.05)
                load.pause()  # stop with no request in flight
                answered = load.ok
            assert answered > 600
            # the unknown experiment's 404s, and a kept-alive connection to the killed
            # process that fails before any process reads its request
            assert set(load.other) <= {
                "404",
                "ConnectionError",
                "reward ConnectionError",
            }, load.other

            # every 200 is counted once, the killed process's included
            def counted():
                result = query(url, "sum(banditd_decisions_total)")
                return result and float(result[0]["value"][1]) == answered

            poll(counted, timeout=15, interval=0.2)
            assert query(url, 'sum(banditd_decisions_total{experiment="unknown"})') == []
            # and as answers by status, summed from every process's files when read
            responses = query(url, 'sum(banditd_responses_total{route="/choose",status="200"})')
            assert float(responses[0]["value"][1]) == answered

            def panels_without_data() -> list[str]:
                # every panel's query runs without error (query() fails the test otherwise)
                return [
                    f"{title}: no data for {expr}"
                    for title, expr in panel_queries()
                    if not query(url, expr) and title in MUST_HAVE_DATA
                ]

            # a rate needs two scrapes of a series inside its window: on a busy box a
            # scrape of the worker can come late, so give the series a few more scrapes
            failures: list[str] = []

            def every_panel_has_data() -> bool:
                failures[:] = panels_without_data()
                return not failures

            try:
                poll(every_panel_has_data, timeout=15, interval=0.5)
            except pytest.fail.Exception:
                pytest.fail(f"panels without data: {failures}")

            rules = requests.get(url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
            evaluated = [r for g in rules for r in g["rules"]]
            assert len(evaluated) == 14
            assert all(r["health"] == "ok" for r in evaluated), [
                (r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"
            ]
        finally:
            prometheus.send_signal(signal.SIGTERM)
            try:
                prometheus.wait(timeout=10)
            except subprocess.TimeoutExpired:
                prometheus.kill()
