"""GET /metrics on the API, in-process (one process: no multiprocess directory)."""

from __future__ import annotations

import dataclasses

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from tests.conftest import AUTH, choose, reward


def samples(client) -> dict[tuple[str, tuple], float]:
    """Every sample of GET /metrics: (name, sorted labels) -> value."""
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(r.get_data(as_text=True)):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def value(found, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_needs_no_key_and_counts_decisions_rewards_and_errors(client):
    before = samples(client)
    shown = [choose(client, context={"hour": 3}) for _ in range(3)]
    assert all(r.status_code == 200 for r in shown)
    first = shown[0].json
    assert reward(client, first["decision_id"], first["arms"][0]["arm"], 1).status_code == 202
    # the same reward again is 202 already_recorded: not counted as a reward
    again = reward(client, first["decision_id"], first["arms"][0]["arm"], 1)
    assert again.json["status"] == "already_recorded"
    assert choose(client, experiment="nope").status_code == 404
    assert client.post("/choose", json={}).status_code == 401
    assert client.get("/nowhere", headers=AUTH).status_code == 404
    assert client.get("/choose", headers=AUTH).status_code == 405

    after = samples(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("banditd_decisions_total", experiment="home_feed") == 3
    assert delta("banditd_rewards_total", experiment="home_feed") == 1
    assert delta("banditd_errors_total", route="/choose", code="unknown_experiment") == 1
    assert delta("banditd_errors_total", route="/choose", code="unauthorized") == 1
    assert delta("banditd_errors_total", route="unmatched", code="not_found") == 1
    assert delta("banditd_errors_total", route="unmatched", code="method_not_allowed") == 1
    # an unknown experiment is never a label value
    assert not any(dict(labels).get("experiment") == "nope" for _, labels in after)
    assert delta("banditd_request_duration_seconds_count", route="/choose") == 5
    assert delta("banditd_request_duration_seconds_count", route="/reward") == 2
    assert delta("banditd_responses_total", route="/reward", status="202") == 2
    assert delta("banditd_responses_total", route="/choose", status="200") == 3
    assert delta("banditd_responses_total", route="/choose", status="404") == 1
    assert delta("banditd_request_duration_seconds_count", route="/metrics") == 1
    smallest = min(a["propensity"] for r in shown for a in r.json["arms"])
    assert value(after, "banditd_propensity_min", experiment="home_feed") == smallest
    # the model cache checked the saved model: its age is known
    assert value(after, "banditd_model_checked_timestamp_seconds", experiment="home_feed") > 0
    assert delta("banditd_redis_roundtrip_seconds_count") >= 1
    assert value(after, "banditd_config_rejected") == 0


def test_metrics_off_answers_404(settings):
    app = create_app(
        dataclasses.replace(settings, metrics_enabled=False), rng=np.random.default_rng(1)
    )
    client = app.test_client()
    r = client.get("/metrics")
    assert r.status_code == 404
    assert r.json["error"]["code"] == "not_found"
    assert choose(client, context={"hour": 3}).status_code == 200


def test_rejected_config_is_reported(client, config_file):
    config_file.write_text("this is not toml [")
    assert client.get("/readyz").json["checks"]["config"] != "ok"
    assert value(samples(client), "banditd_config_rejected") == 1


def test_rewards_of_an_experiment_dropped_from_the_config_count_as_unknown(client, config_file):
    shown = [choose(client, context={"hour": 3}).json for _ in range(2)]
    assert reward(client, shown[0]["decision_id"], shown[0]["arms"][0]["arm"], 1).status_code == 202
    before = samples(client)
    text = config_file.read_text()
    config_file.write_text(text[text.index("[experiments.push_copy]") :])
    assert choose(client, context={"hour": 3}).status_code == 404  # the reload took effect
    samples(client)  # a flush: the recorder sees the new config
    # the decision is still in Redis, so its reward is accepted, under no name of the config
    later = reward(client, shown[1]["decision_id"], shown[1]["arms"][0]["arm"], 1)
    assert later.json["status"] == "accepted"
    after = samples(client)
    assert value(after, "banditd_rewards_total", experiment="home_feed") == value(
        before, "banditd_rewards_total", experiment="home_feed"
    )
    unknown = value(after, "banditd_rewards_total", experiment="unknown")
    assert unknown - value(before, "banditd_rewards_total", experiment="unknown") == 1
