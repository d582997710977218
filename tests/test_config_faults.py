"""A broken config file, a removed experiment, no worker: the service stays up and says so."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal

import numpy as np
import pytest
import requests

from app import create_app, keys
from app.config import ConfigError
from app.config_source import ConfigSource
from app.last_good_config import LastGoodConfig
from tests.conftest import AUTH, EXPERIMENTS_TOML, choose, poll, reward, rows
from tests.service_processes import replace_atomically, running_service
from tests.test_config import rewrite

BROKEN = "this is [not toml"
WITHOUT_PUSH_COPY = EXPERIMENTS_TOML[: EXPERIMENTS_TOML.index("[experiments.push_copy]")]


def test_a_process_started_while_the_file_is_broken_serves_the_last_good_config(
    settings, config_file, redis_client, caplog
):
    good = create_app(settings).extensions["banditd"].config.current()  # saves the good file
    rewrite(config_file, BROKEN)
    with caplog.at_level(logging.ERROR):
        app = create_app(settings)
    source = app.extensions["banditd"].config
    assert source.current().get("home_feed").version == good.get("home_feed").version
    assert "starting from the last good config" in caplog.text
    client = app.test_client()
    assert choose(client, context={"hour": 3}).status_code == 200
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "degraded" and "rejected" in ready["checks"]["config"]

    rewrite(config_file, EXPERIMENTS_TOML.replace("alpha = 1.0", "alpha = 2.0"))
    with caplog.at_level(logging.INFO):
        assert source.reload_if_changed()
    assert "accepted again" in caplog.text
    assert source.last_error is None and source.current().get("home_feed").params.alpha == 2.0


def test_without_any_good_config_a_broken_file_stops_start_up(config_file, redis_client):
    rewrite(config_file, BROKEN)
    with pytest.raises(ConfigError):
        ConfigSource(str(config_file), last_good=LastGoodConfig(redis_client))


def test_readyz_is_degraded_without_a_live_worker_or_when_learning_lags(
    settings, client, worker, redis_client
):
    body = client.get("/readyz").get_json()
    assert body["status"] == "degraded"
    assert "home_feed: no live worker holds its lease" in body["checks"]["workers"]

    worker.run(until_idle=True)  # takes every lease
    assert client.get("/readyz").get_json() == {
        "status": "ready",
        "checks": {"redis": "ok", "postgres": "ok", "config": "ok", "workers": "ok"},
    }
    strict = create_app(dataclasses.replace(settings, ready_max_lag_seconds=0.05)).test_client()
    choose(client, context={"hour": 1})  # not learned while the worker does not run

    def lag_reported():
        return "oldest unlearned entry" in strict.get("/readyz").get_json()["checks"]["workers"]

    poll(lag_reported, timeout=5)
    worker.run(until_idle=True)
    assert strict.get("/readyz").get_json()["checks"]["workers"] == "ok"


def test_a_removed_experiment_is_drained_before_the_worker_lets_it_go(
    client, worker, clock, config_file, redis_client, engine, caplog
):
    shown = []
    for _ in range(3):
        answer = client.post("/choose", json={"experiment": "push_copy"}, headers=AUTH)
        assert answer.status_code == 200
        shown.append((answer.get_json()["decision_id"], answer.get_json()["arms"][0]["arm"]))
    worker.run(until_idle=True)
    rewrite(config_file, WITHOUT_PUSH_COPY)

    assert client.post("/choose", json={"experiment": "push_copy"}, headers=AUTH).status_code == 404
    assert reward(client, *shown[0], 1.0).status_code == 202
    with caplog.at_level(logging.INFO):
        worker.run(until_idle=True)
        assert redis_client.get(keys.owner("push_copy")), "held while windows are open"
        clock.advance(61)  # every window closes: the other two get the default reward

        def let_go():
            worker.step()
            return not redis_client.exists(keys.owner("push_copy"))

        poll(let_go, timeout=10)
    logged = rows(
        engine,
        "SELECT decision_id, arm, kind FROM rewards WHERE experiment = 'push_copy' "
        "ORDER BY decision_id",
    )
    assert sorted((r["decision_id"], r["arm"], r["kind"]) for r in logged) == sorted(
        [(*shown[0], "explicit"), (*shown[1], "default"), (*shown[2], "default")]
    )
    assert redis_client.xlen(keys.stream("push_copy")) == 0
    assert not redis_client.zcard(keys.pending("push_copy"))
    assert "removed experiments: push_copy" in caplog.text
    assert "draining its stream" in caplog.text and "let push_copy go" in caplog.text


@pytest.mark.e2e
def test_killed_api_process_and_new_worker_start_from_the_last_good_config(
    tmp_path, engine, redis_client, request
):
    with running_service(EXPERIMENTS_TOML, tmp_path, request) as svc:
        assert svc.post("/choose", {"experiment": "home_feed"}).status_code == 200
        replace_atomically(svc.config_path, BROKEN)
        victim = min(svc.web_workers())
        os.kill(victim, signal.SIGKILL)

        def replaced():
            workers = svc.web_workers()
            return len(workers) == 2 and victim not in workers

        poll(replaced, timeout=20, interval=0.05)
        assert svc.gunicorn.poll() is None, "gunicorn stopped"
        answers = [svc.post("/choose", {"experiment": "home_feed"}) for _ in range(20)]
        assert {a.status_code for a in answers} == {200}

        def every_process_reports_the_broken_file():  # the survivor looks once a second
            ready = [svc.get("/readyz")[1].json() for _ in range(10)]
            return all("rejected" in r["checks"]["config"] for r in ready)

        poll(every_process_reports_the_broken_file, timeout=10)

        svc.worker.send_signal(signal.SIGTERM)
        svc.worker.wait(timeout=15)
        fresh = svc.replace_worker(svc.worker)  # starts while the file is broken
        decision = svc.post("/choose", {"experiment": "home_feed"}).json()["decision_id"]

        def logged():
            assert fresh.poll() is None, f"the worker exited with {fresh.returncode}"
            return rows(engine, "SELECT 1 FROM decisions WHERE decision_id = :d", d=decision)

        poll(logged, timeout=20)
        assert "starting from the last good config" in svc.logs["worker"].read_text()
        with requests.get(svc.url("/healthz"), timeout=2) as health:
            assert health.status_code == 200
        np.testing.assert_equal(len(svc.web_workers()), 2)
