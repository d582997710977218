"""The Python client (app/client/) against the service running as gunicorn and the worker."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from app.client import (
    BadRequest,
    BanditClient,
    Conflict,
    Decision,
    NotFound,
    RankedArm,
    ServiceUnavailable,
    TransportError,
    Unauthorized,
)
from tests.conftest import API_KEY, EXPERIMENTS_TOML, poll, rows
from tests.service_processes import free_port, running_service

CONTEXT = {"hour": 9, "city": "berlin"}


@pytest.fixture
def service(tmp_path: Path, engine, redis_client, request):
    with running_service(EXPERIMENTS_TOML, tmp_path, request) as svc:
        yield svc


@pytest.fixture
def bandit(service):
    with BanditClient(service.base_url, API_KEY) as client:
        yield client


def test_choose_and_reward_return_typed_results_and_a_repeat_counts_once(bandit, engine):
    decision = bandit.choose("home_feed", CONTEXT, k=2)
    assert isinstance(decision, Decision) and len(decision.arms) == 2
    assert all(isinstance(a, RankedArm) and 0 < a.propensity <= 1 for a in decision.arms)
    assert decision.arm == decision.arms[0].arm
    assert decision.decision_id.startswith("home_feed:")

    first = bandit.reward(decision.decision_id, decision.arm, 1.0)
    again = bandit.reward(decision.decision_id, decision.arm, 1.0)
    assert (first.status, again.status) == ("accepted", "already_recorded")
    assert first.reward == 1.0 and first.arm == decision.arm

    logged = poll(
        lambda: rows(
            engine,
            "SELECT r.reward, d.request_id FROM rewards r JOIN decisions d USING (decision_id) "
            "WHERE r.decision_id = :d AND r.kind = 'explicit'",
            d=decision.decision_id,
        )
    )
    assert len(logged) == 1 and logged[0]["reward"] == 1.0
    assert len(logged[0]["request_id"]) == 32  # the client's own id, which makes retries safe


def test_a_repeated_request_id_is_answered_with_the_same_decision(bandit):
    one = bandit.choose("home_feed", CONTEXT, request_id="order-17")
    two = bandit.choose("home_feed", CONTEXT, request_id="order-17")
    assert one == two
    assert bandit.choose("home_feed", CONTEXT).decision_id != one.decision_id


def test_errors_are_typed_with_the_services_code_and_field(bandit, service):
    with pytest.raises(NotFound) as unknown:
        bandit.choose("no_such_experiment")
    assert (unknown.value.status, unknown.value.code) == (404, "unknown_experiment")

    with pytest.raises(BadRequest) as bad:
        bandit.choose("home_feed", {"hour": "nine"})
    assert (bad.value.code, bad.value.field) == ("invalid_feature", "context.hour")

    decision = bandit.choose("home_feed", CONTEXT)
    bandit.reward(decision.decision_id, decision.arm, 1.0)
    with pytest.raises(Conflict) as conflict:
        bandit.reward(decision.decision_id, decision.arm, 0.0)
    assert conflict.value.code == "reward_conflict"
    with pytest.raises(NotFound) as gone:
        bandit.reward("home_feed:000000000000ffffffffffffffff", "job_kitchen", 1.0)
    assert gone.value.code == "unknown_decision"

    with BanditClient(service.base_url, "wrong-key") as stranger:
        with pytest.raises(Unauthorized) as denied:
            stranger.choose("home_feed")
    assert denied.value.code == "unauthorized"


def test_requests_reuse_one_kept_alive_connection(bandit, service):
    for _ in range(30):
        bandit.reward(*_shown(bandit.choose("home_feed", CONTEXT)), 0.0)
    assert [e["name"] for e in bandit.experiments()] == ["home_feed", "push_copy"]
    pool = bandit._pool.connection_from_url(service.base_url)
    assert pool.num_connections == 1  # 61 requests, one TCP connection


def _shown(decision: Decision) -> tuple[str, str]:
    return decision.decision_id, decision.arm


class SilentServer:
    """Listens and never answers: a service stalled after reading a request.

    The kernel completes each connection into the listen backlog without an
    ``accept``; :meth:`connections` accepts whatever arrived and counts it.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=32)
        self.sock.setblocking(False)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def connections(self) -> int:
        """Connections made so far (the client's calls have returned: all are in the backlog)."""
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except BlockingIOError:
                return len(self.accepted)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def test_a_lost_answer_is_retried_only_when_a_repeat_is_safe(silent):
    fast = dict(timeout=0.2, retries=2, backoff=0.0)
    with BanditClient(silent.url, API_KEY, **fast) as client:
        with pytest.raises(TransportError):
            client.choose("home_feed", CONTEXT)  # carries the client's request_id
        assert silent.connections() == 3
        with pytest.raises(TransportError):
            client.reward("home_feed:x", "a", 1.0)  # a repeated reward counts once
        assert silent.connections() == 6
    with BanditClient(silent.url, API_KEY, auto_request_id=False, **fast) as client:
        with pytest.raises(TransportError):
            client.choose("home_feed", CONTEXT)  # no request_id: a repeat could decide twice
        assert silent.connections() == 7


def test_a_service_that_is_not_there_raises_a_transport_error():
    with BanditClient(f"http://127.0.0.1:{free_port()}", API_KEY, backoff=0.0) as client:
        with pytest.raises(TransportError, match="/choose"):
            client.choose("home_feed")


class FlakyService:
    """An HTTP server that answers 503 storage_unavailable ``failures`` times, then a decision.

    It records each request body, so a test can see what every attempt sent.
    """

    def __init__(self, failures: int) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        service = self
        self.failures = failures
        self.bodies: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.bodies.append(body)
                if len(service.bodies) <= service.failures:
                    status, answer = 503, {
                        "error": {"code": "storage_unavailable", "message": "Redis is away"}
                    }
                else:
                    status, answer = 200, {
                        "decision_id": "home_feed:1",
                        "arms": [{"arm": "job_kitchen", "score": 1.0, "propensity": 1.0}],
                        "config_version": "v",
                    }
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_503_is_retried_with_the_same_request_id_only():
    flaky = FlakyService(failures=2)
    try:
        with BanditClient(flaky.url, API_KEY, backoff=0.0) as client:
            decision = client.choose("home_feed", CONTEXT)
        assert decision.arm == "job_kitchen" and len(flaky.bodies) == 3
        assert len({b["request_id"] for b in flaky.bodies}) == 1  # one decision, asked 3 times

        flaky.bodies.clear()
        with BanditClient(flaky.url, API_KEY, backoff=0.0, auto_request_id=False) as client:
            with pytest.raises(ServiceUnavailable) as unavailable:
                client.choose("home_feed", CONTEXT)
        assert unavailable.value.code == "storage_unavailable" and len(flaky.bodies) == 1
    finally:
        flaky.close()
