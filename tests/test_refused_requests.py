"""Refused requests cost no lasting memory: the API's caches stay bounded.

Issue 17: 300 requests naming 1,000 new arm ids each, refused because the
dynamic catalogue was full, grew the two API processes by 31 and 57 MB: every
candidate got a row in the process's model cache before the decision was refused.
"""

from __future__ import annotations

from pathlib import Path

from app.model_cache import SPARE_PRIOR_ROWS
from tests.conftest import EXPERIMENTS_TOML, choose, reward, rows
from tests.test_arm_lifecycle import CATALOGUE_TOML
from tests.test_config import rewrite

REQUESTS = 1000
NEW_ARMS = 1000  # per request: the most the schema allows
WARM_UP = 200  # requests before the first RSS reading: the cache's working size is reached
MAX_RSS_GROWTH = 8 * 2**20  # the leak measured before the fix grew ~250 MB here


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def choose_jobs(client, candidates):
    return choose(client, experiment="jobs", context={"city": "berlin"}, candidates=candidates)


def test_refused_requests_with_new_arm_ids_leave_memory_flat(
    config_file, app, client, engine, worker
):
    rewrite(config_file, EXPERIMENTS_TOML + CATALOGUE_TOML)
    full = ["a", "b", "c", "d"]
    accepted = [choose_jobs(client, [arm]).get_json()["decision_id"] for arm in full]
    cache = app.extensions["banditd"].chooser.cache

    rss_after_warm_up = None
    for i in range(REQUESTS):
        response = choose_jobs(client, [f"new{i}_{j}" for j in range(NEW_ARMS)])
        assert response.status_code == 409, response.get_data(as_text=True)
        assert response.get_json()["error"]["code"] == "arm_limit_reached"
        # whatever it held, the cache is back within its bound after every request
        assert cache.rows_held() <= 2 * (SPARE_PRIOR_ROWS + NEW_ARMS)
        if i + 1 == WARM_UP:
            rss_after_warm_up = rss_bytes()
    growth = rss_bytes() - rss_after_warm_up
    assert growth < MAX_RSS_GROWTH, f"RSS grew {growth / 2**20:.1f} MiB over refused requests"

    # the catalogue's own arms still serve, and the log holds only what was accepted
    again = choose_jobs(client, full)
    assert again.status_code == 200
    worker.run(until_idle=True)
    logged = {r["decision_id"] for r in rows(engine, "SELECT decision_id FROM decisions")}
    assert logged == {*accepted, again.get_json()["decision_id"]}
    assert rows(engine, "SELECT count(*) AS n FROM impressions WHERE arm LIKE 'new%'") == [{"n": 0}]


def test_arms_that_learned_keep_their_parameters_when_the_cache_drops_rows(
    config_file, app, client, worker
):
    rewrite(config_file, EXPERIMENTS_TOML + CATALOGUE_TOML)
    for _ in range(5):
        decision = choose_jobs(client, ["a"]).get_json()
        assert reward(client, decision["decision_id"], "a", 1.0).status_code == 202
    worker.run(until_idle=True)
    services = app.extensions["banditd"]
    jobs = services.config.current().get("jobs")
    table = services.chooser.cache.table(jobs, ["a"])
    assert table.state.n[table.index["a"]] == 5

    for i in range(5):  # enough new arms to pass the bound more than once
        choose_jobs(client, [f"new{i}_{j}" for j in range(NEW_ARMS)])
    table = services.chooser.cache.table(jobs, ["a"])
    assert len(table.arms) < 2 * NEW_ARMS  # rows were dropped ...
    assert table.state.n[table.index["a"]] == 5  # ... but not the learned arm's
