"""Arms coming and going: added arms serve at once, removed ones keep their history,
and a dynamic catalogue creates arms on first sight, up to ``max_arms``."""

import pytest

from tests.conftest import AUTH, EXPERIMENTS_TOML, choose, reward, rows
from tests.test_config import rewrite

CATALOGUE_TOML = """
[experiments.jobs]
policy = "linucb"
alpha = 0.1
arms = "dynamic"
max_arms = 4
reward = { default = 0.0, window_seconds = 60, min = 0.0, max = 1.0 }

[experiments.jobs.features]
categorical = { city = ["berlin", "hamburg"] }
"""


def choose_jobs(client, candidates, **body):
    return choose(
        client, experiment="jobs", context={"city": "berlin"}, candidates=candidates, **body
    )


@pytest.fixture
def catalogue(config_file):
    rewrite(config_file, EXPERIMENTS_TOML + CATALOGUE_TOML)
    return config_file


def test_dynamic_catalogue_needs_candidates(catalogue, client):
    response = choose(client, experiment="jobs", context={})
    assert response.status_code == 400
    assert response.get_json()["error"] == {
        "code": "missing_field",
        "field": "candidates",
        "message": "jobs has a dynamic catalogue: send the candidate arms",
    }


def test_dynamic_catalogue_accepts_new_arm_ids(catalogue, client):
    body = choose_jobs(client, ["job_1", "job_2"]).get_json()
    assert body["arms"][0]["arm"] in ("job_1", "job_2")
    assert body["arms"][0]["propensity"] == 0.5  # both unseen: a tie under the prior


def test_dynamic_catalogue_rejects_unusable_arm_ids(catalogue, client):
    response = choose_jobs(client, ["job 1"])
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "candidates"


def test_dynamic_catalogue_learns_new_arms(catalogue, client, worker):
    for _ in range(20):
        decision = choose_jobs(client, ["job_1", "job_2", "job_3"], k=3).get_json()
        for slot in decision["arms"]:
            value = 1.0 if slot["arm"] == "job_2" else 0.0
            reward(client, decision["decision_id"], slot["arm"], value)
    worker.run(until_idle=True)
    picks = {
        choose_jobs(client, ["job_1", "job_2", "job_3"]).get_json()["arms"][0]["arm"]
        for _ in range(10)
    }
    assert picks == {"job_2"}


def test_dynamic_catalogue_stops_growing_at_max_arms(catalogue, client):
    for arm in ("a", "b", "c", "d"):
        assert choose_jobs(client, [arm]).status_code == 200
    response = choose_jobs(client, ["e"])
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "arm_limit_reached"
    assert choose_jobs(client, ["a", "b"]).status_code == 200  # known arms still serve


def test_a_full_catalogue_chooses_among_its_known_candidates_only(
    catalogue, client, worker, engine
):
    for arm in ("a", "b", "c", "d"):
        assert choose_jobs(client, [arm]).status_code == 200
    # a new candidate could never be shown now: deciding among all of them would refuse the
    # draws of "e" and log "a" with a propensity that counted "e" (biased estimates)
    for _ in range(20):
        response = choose_jobs(client, ["e", "a", "f", "b"])
        assert response.status_code == 200
        [slot] = response.get_json()["arms"]
        assert slot["arm"] in ("a", "b") and slot["propensity"] == 0.5  # a tie of two
    # fewer known candidates than k: refused, saying why
    response = choose_jobs(client, ["e", "a"], k=2)
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "arm_limit_reached" and "only 1 of the candidates" in error["message"]
    worker.run(until_idle=True)
    logged = rows(engine, "SELECT candidates FROM decisions WHERE array_length(candidates, 1) > 1")
    assert [r["candidates"] for r in logged] == [["a", "b"]] * 20  # what it chose among


def test_a_catalogue_with_room_for_the_slate_chooses_among_all_its_candidates(
    catalogue, client
):
    for arm in ("a", "b", "c"):  # 3 of max_arms = 4: room for one more
        assert choose_jobs(client, [arm]).status_code == 200
    # one slot, two new candidates: whichever is drawn fits
    drawn = set()
    for _ in range(30):
        response = choose_jobs(client, ["e", "f", "a"])
        assert response.status_code == 200
        [slot] = response.get_json()["arms"]
        assert slot["propensity"] < 0.5  # chosen among all three
        drawn.add(slot["arm"])
        if slot["arm"] in ("e", "f"):
            break  # the catalogue is full now
    assert drawn & {"e", "f"}
    # full: a slate of two could need two new arms, so the known candidates only
    response = choose_jobs(client, ["g", "a", "b"], k=2)
    assert response.status_code == 200
    assert {slot["arm"] for slot in response.get_json()["arms"]} == {"a", "b"}


def test_experiments_lists_a_dynamic_catalogue(catalogue, client):
    listed = {
        e["name"]: e for e in client.get("/experiments", headers=AUTH).get_json()["experiments"]
    }
    assert listed["jobs"]["arms"] == "dynamic"
    assert listed["jobs"]["max_arms"] == 4


def test_added_arm_serves_at_once(config_file, client):
    choose(client, context={})
    rewrite(
        config_file, EXPERIMENTS_TOML.replace('"job_warehouse"]', '"job_warehouse", "job_driver"]')
    )
    body = choose(client, context={}, candidates=["job_driver"]).get_json()
    assert body["arms"][0]["arm"] == "job_driver"


def test_removed_arm_keeps_its_history(app, config_file, client, worker):
    for _ in range(5):
        decision = choose(client, context={}, candidates=["job_kitchen"]).get_json()
        reward(client, decision["decision_id"], "job_kitchen", 1.0)
    worker.run(until_idle=True)
    cache = app.extensions["banditd"].chooser.cache
    config = app.extensions["banditd"].config

    def learned(arm):
        exp = config.current().get("home_feed")
        table = cache.table(exp)
        return table.state.n[table.index[arm]] if arm in table.index else None

    assert learned("job_kitchen") == 5
    rewrite(config_file, EXPERIMENTS_TOML.replace('"job_kitchen", ', ""))
    picks = {choose(client, context={}).get_json()["arms"][0]["arm"] for _ in range(30)}
    assert "job_kitchen" not in picks
    assert learned("job_kitchen") is None

    rewrite(config_file, EXPERIMENTS_TOML)
    choose(client, context={})
    assert learned("job_kitchen") == 5
