"""BANDITD_LOG_FORMAT=json: gunicorn and the worker log one JSON object per line; each answered
request is a line with its route, status, duration, experiment and decision id."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from app import create_app
from app.logs import REQUEST_LOGGER
from tests.conftest import EXPERIMENTS_TOML, choose, poll
from tests.service_processes import running_service


def json_lines(path) -> list[dict]:
    """Every line of a log, each of which must be a JSON object."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}: not a JSON line: {line!r}")
    return parsed


def request_lines(path) -> list[dict]:
    return [r for r in json_lines(path) if r.get("logger") == "banditd.request"]


@pytest.mark.e2e
def test_json_logs_carry_every_request(tmp_path, request, monkeypatch):
    monkeypatch.setenv("BANDITD_LOG_FORMAT", "json")
    monkeypatch.setenv("BANDITD_LOG_LEVEL", "info")
    monkeypatch.setenv("BANDITD_WORKER_METRICS_PORT", "0")
    with running_service(EXPERIMENTS_TOML, tmp_path, request) as svc:
        chosen = svc.post("/choose", {"experiment": "home_feed", "context": {"hour": 8}})
        assert chosen.status_code == 200
        decision = chosen.json()
        rewarded = svc.post(
            "/reward",
            {
                "decision_id": decision["decision_id"],
                "arm": decision["arms"][0]["arm"],
                "reward": 1,
            },
        )
        assert rewarded.status_code == 202
        assert svc.post("/choose", {"experiment": "nope"}).status_code == 404
        log = svc.logs["gunicorn"]
        lines = poll(lambda: len(request_lines(log)) >= 4 and request_lines(log), timeout=10)
        # the worker logs JSON too
        poll(
            lambda: any("processing stream" in r["message"] for r in json_lines(svc.logs["worker"]))
        )

    by_route = {}
    for line in lines:
        by_route.setdefault((line["route"], line["status"]), line)
    choose = by_route[("/choose", 200)]
    assert choose["method"] == "POST"
    assert choose["experiment"] == "home_feed"
    assert choose["decision_id"] == decision["decision_id"]
    assert choose["duration_ms"] > 0
    assert choose["level"] == "INFO" and choose["time"]
    reward = by_route[("/reward", 202)]
    assert reward["decision_id"] == decision["decision_id"]
    assert reward["experiment"] == "home_feed"
    refused = by_route[("/choose", 404)]
    assert refused["error_code"] == "unknown_experiment"
    assert refused["experiment"] == "nope"  # the log says what was asked; metrics say "unknown"
    assert ("/healthz", 200) in by_route  # start_service's probes
    # gunicorn's own lines are JSON as well (every line of the log parsed above)
    assert any(r["logger"] == "gunicorn.error" for r in json_lines(svc.logs["gunicorn"]))


@pytest.mark.e2e
def test_log_level_warning_leaves_request_lines_out(tmp_path, request, monkeypatch):
    monkeypatch.setenv("BANDITD_LOG_FORMAT", "json")
    monkeypatch.setenv("BANDITD_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("BANDITD_WORKER_METRICS_PORT", "0")
    with running_service(EXPERIMENTS_TOML, tmp_path, request) as svc:
        assert svc.post("/choose", {"experiment": "home_feed"}).status_code == 200
        assert svc.post("/choose", {"experiment": "nope"}).status_code == 404
    assert request_lines(svc.logs["gunicorn"]) == []


@pytest.mark.parametrize(
    ("request_log", "logged"), [("all", [200, 404]), ("errors", [404]), ("none", [])]
)
def test_request_log_setting_picks_the_answers_logged(settings, caplog, request_log, logged):
    app = create_app(
        dataclasses.replace(settings, request_log=request_log), rng=np.random.default_rng(3)
    )
    client = app.test_client()
    with caplog.at_level(logging.INFO, logger=REQUEST_LOGGER):
        assert choose(client, context={"hour": 1}).status_code == 200
        assert choose(client, experiment="nope").status_code == 404
    lines = [r for r in caplog.records if r.name == REQUEST_LOGGER]
    assert [r.status for r in lines] == logged
    for r in lines:
        assert r.route == "/choose" and r.method == "POST" and r.duration_ms > 0


def test_text_log_escapes_what_a_client_sent_so_it_cannot_forge_a_line(client, capfd):
    from app.logs import configure_logging
    from tests.conftest import reward

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    configure_logging("text", "INFO")
    try:
        forged = "2026-12-05 21:50:00,000 ERROR banditd: FAKE injected line"
        answer = reward(client, f"home_feed:x\n{forged}\u2028", "job_kitchen", 1.0)
        assert answer.status_code == 404
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    lines = capfd.readouterr().err.splitlines()
    [line] = [line for line in lines if "POST /reward 404" in line]
    assert f"decision_id=home_feed:x\\n{forged}\\u2028" in line
    assert not any(line.startswith(forged) for line in lines)
