"""banditd status: what it reports per experiment, and its exit code when something is wrong."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from app import keys
from app.services import build_services
from app.status import cli as status_cli
from app.status.check import gather
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, choose, reward

BANDITD = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "banditd"


def status(settings, capsys, sample_seconds: float = 0.0) -> tuple[int, dict]:
    args = argparse.Namespace(json=True, sample_seconds=sample_seconds)
    code = status_cli.run(args, settings)
    return code, json.loads(capsys.readouterr().out)


def experiment(report: dict, name: str) -> dict:
    return next(e for e in report["experiments"] if e["experiment"] == name)


def hold_lease(redis_client, name: str) -> None:
    """Make the lease of ``name`` look held by a live worker, as a worker's renewal does."""
    redis_client.set(keys.owner(name), "some-worker-1", px=30_000)


def old_entry(redis_client, name: str, age_seconds: float, seq: int = 0) -> None:
    """Append a stream entry whose id says it was appended ``age_seconds`` ago."""
    ms = int((time.time() - age_seconds) * 1000)
    redis_client.xadd(keys.stream(name), {"t": "config"}, id=f"{ms}-{seq}")


def test_status_without_a_worker_exits_1(settings, client, capsys):
    assert choose(client, context={"hour": 2}).status_code == 200
    code, report = status(settings, capsys)
    assert code == 1
    feed = experiment(report, "home_feed")
    assert feed["lease_holder"] is None
    assert "no worker holds its lease" in feed["problems"]
    assert feed["backlog"] == 2  # the config version and the decision, not yet learned
    assert report["ok"] is False
    assert "home_feed: no worker holds its lease" in report["problems"]


def test_status_with_a_worker_keeping_up_exits_0(settings, client, worker, capsys):
    shown = [choose(client, context={"hour": 2}).json for _ in range(3)]
    assert reward(client, shown[0]["decision_id"], shown[0]["arms"][0]["arm"], 1).status_code == 202
    worker.run(until_idle=True)
    code, report = status(settings, capsys)
    assert code == 0, report["problems"]
    feed = experiment(report, "home_feed")
    assert feed["lease_holder"] == worker.consumer
    assert feed["backlog"] == 0
    assert feed["decisions_last_minute"] == 3
    assert feed["rewards_last_minute"] == 1
    assert feed["last_learned_age_seconds"] is not None
    assert (
        feed["config_version"] == build_services(settings).config.current().get("home_feed").version
    )
    assert report["config"] == "ok" and report["postgres"] == "ok"


def test_status_reports_a_lagging_stream(settings, redis_client, engine, capsys):
    hold_lease(redis_client, "home_feed")
    old_entry(redis_client, "home_feed", 45)
    code, report = status(settings, capsys)
    assert code == 1
    [problem] = experiment(report, "home_feed")["problems"]
    assert "oldest unlearned entry is 45 s old" in problem


def test_status_reports_a_growing_backlog(settings, redis_client, engine):
    hold_lease(redis_client, "home_feed")
    old_entry(redis_client, "home_feed", 10)
    services = build_services(settings)
    # entries keep coming while the status samples the stream
    grown = gather(
        services, sample_seconds=0.5, sleep=lambda s: old_entry(redis_client, "home_feed", 9)
    )
    feed = next(e for e in grown.experiments if e.experiment == "home_feed")
    assert feed.backlog_change == 1
    assert any("backlog grows" in p for p in feed.problems), feed.problems
    # the same backlog, not growing, and young: no problem
    steady = gather(services, sample_seconds=0.0)
    assert not next(e for e in steady.experiments if e.experiment == "home_feed").problems
    services.engine.dispose()


def test_status_reports_a_rejected_config(settings, worker, config_file, capsys):
    worker.run(until_idle=True)
    build_services(settings)  # a process accepted the file: it is the last good config
    config_file.write_text("[experiments.broken\n")
    code, report = status(settings, capsys)
    assert code == 1
    assert report["config"].startswith("rejected, the last good config serves")
    assert any(p.startswith("config: rejected") for p in report["problems"])


@pytest.mark.e2e
def test_banditd_status_command(config_file, redis_client, engine):
    env = {
        **os.environ,
        "BANDITD_CONFIG": str(config_file),
        "REDIS_URL": TEST_REDIS_URL,
        "DATABASE_URL": TEST_DATABASE_URL,
    }
    done = subprocess.run(
        [str(BANDITD), "status", "--sample-seconds", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # no worker runs
    assert "PROBLEM home_feed: no worker holds its lease" in done.stdout
    down = subprocess.run(
        [str(BANDITD), "status", "--json"],
        env={**env, "REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 2, down.stdout + down.stderr
    assert json.loads(down.stdout)["problems"][0].startswith("redis: unavailable")
