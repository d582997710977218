"""The console's data routes and sign-in, through the Flask app on real Redis and Postgres.

The figures must equal the analysts' views on a seeded log (bench/synthetic_log.py);
the browser tests (tests/test_console_browser.py) check that the page shows them.
"""

from __future__ import annotations

import base64
import math
import textwrap
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy

from app import create_app
from app.analytics.views import refresh_analyst_views
from app.config import load_config, parse_config
from app.model_store import ArmUpdate, ModelStore
from app.settings import Settings
from bandits import arm_prior, update
from bench.console_bench import SYNTHETIC_CONFIG
from bench.synthetic_log import seed
from tests.conftest import API_KEY, AUTH, EXPERIMENTS_TOML, TEST_DATABASE_URL, TEST_REDIS_URL, rows

# synthetic_0 as bench/synthetic_log.py's second config version has it
SYNTHETIC_TOML = SYNTHETIC_CONFIG
KEYS = (API_KEY, "feed-reader=home_feed:read", "all-reader=*:read", "chooser=*:choose|reward")
DAYS = 10


def basic(key: str, user: str = "anyone") -> dict[str, str]:
    """An HTTP Basic header with ``key`` as the password."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def use_current_model(engine, config_path: Path) -> str:
    """Give the seeded decisions the model id of synthetic_0 as configured.

    bench/synthetic_log.py names a model of its own; the what-if and the model
    estimate read the decisions of the configured (current) model only.
    """
    model_id = load_config(str(config_path)).get("synthetic_0").model_id
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE decisions SET model_id = %(m)s WHERE experiment = 'synthetic_0'",
            {"m": model_id},
        )
    return model_id


@pytest.fixture
def console_config(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.toml"
    path.write_text(textwrap.dedent(EXPERIMENTS_TOML) + SYNTHETIC_TOML)
    return path


@pytest.fixture
def seeded(engine, redis_client, console_config):
    """20,000 synthetic impressions over the last 9 days (10 UTC dates), views refreshed."""
    summary = seed(engine, impressions=20_000, days=DAYS - 1, seed=7)
    use_current_model(engine, console_config)
    refresh_analyst_views(engine)
    return summary


@pytest.fixture
def console(console_app, seeded):
    return console_app


@pytest.fixture
def console_app(console_config, engine, redis_client):
    """The app on the console's config and keys, on an empty log."""
    settings = Settings(
        config_path=str(console_config),
        redis_url=TEST_REDIS_URL,
        database_url=TEST_DATABASE_URL,
        api_keys=frozenset(KEYS),
        config_check_seconds=0.0,
        model_refresh_seconds=0.0,
    )
    return create_app(settings, rng=np.random.default_rng(5)).test_client()


def get(client, path: str, headers=AUTH):
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def test_summary_equals_experiment_daily_and_lift_daily(console, engine):
    body = get(console, f"/experiments/synthetic_0/summary?days={DAYS}")
    today = datetime.now(timezone.utc).date()
    since = today - timedelta(days=DAYS - 1)
    assert (body["since"], body["until"]) == (since.isoformat(), (today + timedelta(1)).isoformat())
    daily = rows(
        engine,
        "SELECT * FROM experiment_daily WHERE experiment = 'synthetic_0' AND day = :d",
        d=today,
    )
    for r in daily:
        group = body["today"]["holdout" if r["holdout"] else "policy"]
        assert group["decisions"] == r["decisions"]
        assert close(group["mean"], r["mean_reward"])
        assert close(group["ci_low"], r["ci_low"]) and close(group["ci_high"], r["ci_high"])
    lift = rows(
        engine, "SELECT * FROM lift_daily WHERE experiment = 'synthetic_0' AND day = :d", d=today
    )
    assert close(body["today"]["lift"]["lift"], lift[0]["lift"])
    assert close(body["today"]["lift"]["ci_low"], lift[0]["ci_low"])
    totals = rows(
        engine,
        "SELECT holdout, sum(decisions) AS decisions, sum(rewarded) AS n, "
        "sum(reward_sum) / sum(rewarded) AS mean FROM experiment_daily "
        "WHERE experiment = 'synthetic_0' AND day >= :s GROUP BY holdout",
        s=since,
    )
    for r in totals:
        group = body["period"]["holdout" if r["holdout"] else "policy"]
        assert (group["decisions"], group["rewarded"]) == (r["decisions"], r["n"])
        assert close(group["mean"], r["mean"])
    p, h = body["period"]["policy"], body["period"]["holdout"]
    assert close(body["period"]["lift"]["lift"], p["mean"] - h["mean"])
    assert body["period"]["lift"]["ci_low"] < body["period"]["lift"]["lift"]
    assert body["settings"]["policy"] == "linucb" and body["settings"]["holdout"] == 0.1


def test_daily_series_equal_the_views_day_by_day(console, engine):
    body = get(console, f"/experiments/synthetic_0/daily?days={DAYS}")
    assert len(body["days"]) == DAYS
    index = {d: i for i, d in enumerate(body["days"])}
    views = rows(engine, "SELECT * FROM experiment_daily WHERE experiment = 'synthetic_0'")
    assert {r["day"].isoformat() for r in views} <= set(index)
    for r in views:
        i, group = index[r["day"].isoformat()], body["holdout" if r["holdout"] else "policy"]
        assert group["decisions"][i] == r["decisions"]
        assert close(group["mean_reward"][i], r["mean_reward"])
        assert close(group["ci_high"][i], r["ci_high"])
    for r in rows(engine, "SELECT * FROM lift_daily WHERE experiment = 'synthetic_0'"):
        assert close(body["lift"]["lift"][index[r["day"].isoformat()]], r["lift"])
    shares = rows(
        engine,
        "SELECT day, arm, top_impressions::float / sum(top_impressions) OVER (PARTITION BY day) "
        "AS share FROM arm_daily WHERE experiment = 'synthetic_0' AND NOT holdout",
    )
    assert shares
    for r in shares:
        assert close(body["shares"][r["arm"]][index[r["day"].isoformat()]], r["share"])
    assert "arm_7" in body["shares"]  # arrives with the second config version


def test_arms_equal_arm_daily_and_show_the_live_model(console, engine, redis_client):
    model_id = load_config_model(console)
    state = arm_prior(5, 1.0)
    x = np.array([1.0, 20.0, 0.0, 0.0, 1.0])
    for _ in range(30):
        update(state, 0, x, 1.0)
    ModelStore(redis_client).save("synthetic_0", [ArmUpdate(model_id, "arm_6", state, 1)], b"1-0")
    body = get(console, f"/experiments/synthetic_0/arms?days={DAYS}")
    by_arm = {a["arm"]: a for a in body["arms"]}
    assert list(by_arm) == [f"arm_{i}" for i in range(8)]
    for r in rows(
        engine,
        "SELECT arm, holdout, sum(impressions) AS impressions, "
        "sum(reward_sum) / sum(rewarded) AS mean FROM arm_daily "
        "WHERE experiment = 'synthetic_0' GROUP BY arm, holdout",
    ):
        group = by_arm[r["arm"]]["holdout" if r["holdout"] else "policy"]
        assert group["impressions"] == r["impressions"]
        assert close(group["mean"], r["mean"])
        assert group["ci_low"] < group["mean"] < group["ci_high"]
    recent = rows(
        engine,
        "SELECT features FROM decisions WHERE experiment = 'synthetic_0' "
        "ORDER BY decided_at DESC LIMIT 1000",
    )
    x_bar = np.mean([r["features"] for r in recent], axis=0)
    model = by_arm["arm_6"]["model"]
    assert close(model["estimate"], state.theta[0] @ x_bar)
    assert close(model["uncertainty"], math.sqrt(x_bar @ state.A_inv[0] @ x_bar))
    assert model["learned"] == 30
    assert by_arm["arm_0"]["model"] is None  # never learned


def load_config_model(client) -> str:
    return client.application.extensions["banditd"].config.current().get("synthetic_0").model_id


def test_config_history_lists_versions_with_their_changes(console):
    body = get(console, "/experiments/synthetic_0/config-history")
    first, second = body["versions"]
    assert (
        first["previous_version"] is None and second["previous_version"] == first["config_version"]
    )
    assert second["changed"]["alpha"] == {"old": 1.0, "new": 0.5}
    assert second["changed"]["epsilon"] == {"old": 0.05, "new": 0.02}
    assert second["in_force_from"] == first["in_force_until"]


def test_config_history_answers_with_a_version_holding_a_huge_number(console, engine):
    # an earlier release accepted reward bounds of 1e308; jsonb gives them back as integers
    # of 309 digits, which once made this route a 500 for good
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO config_versions (experiment, config_version, settings, "
                "first_seen_at) VALUES ('synthetic_0', 'huge', "
                "'{\"reward\": {\"min\": -1e308, \"max\": 1e308}}', now())"
            )
        )
    body = get(console, "/experiments/synthetic_0/config-history")
    huge = next(v for v in body["versions"] if v["config_version"] == "huge")
    assert huge["settings"]["reward"] == {"min": -1e308, "max": 1e308}


def test_what_if_estimates_a_proposal_and_gives_toml_that_deploys_it(console, console_config):
    body = get(console, "/experiments/synthetic_0/what-if?epsilon=0.3&alpha=2&sample=2000")
    assert body["sample"] == 2000
    assert body["proposed"] == {
        "policy": "linucb",
        "alpha": 2.0,
        "epsilon": 0.3,
        "v": 1.0,
        "gamma_scale": 10.0,  # squarecb's knobs at their defaults: not in the config
        "gamma_exponent": 0.5,
    }
    for side in ("current", "proposed"):
        names = [e["estimator"] for e in body["estimates"][side]]
        assert names == ["ips", "snips", "dr"]
        for e in body["estimates"][side]:
            assert e["low"] <= e["value"] <= e["high"] and 0 < e["ess"] <= 2000
    assert body["toml"] == ["[experiments.synthetic_0]", "alpha = 2.0", "epsilon = 0.3"]
    # the lines, put in the config file, give the proposal
    raw = tomllib.loads(console_config.read_text())
    raw["experiments"]["synthetic_0"].update(
        tomllib.loads("\n".join(body["toml"]))["experiments"]["synthetic_0"]
    )
    deployed = parse_config(raw).get("synthetic_0")
    assert (deployed.policy, deployed.params.alpha, deployed.params.epsilon) == ("linucb", 2.0, 0.3)


@pytest.mark.parametrize("policy", ["lin_ts", "beta_ts", "epsilon_greedy", "random"])
def test_what_if_scores_every_policy_with_bounded_work(console, policy):
    body = get(console, f"/experiments/synthetic_0/what-if?policy={policy}&sample=5000")
    assert body["toml"] == ["[experiments.synthetic_0]", f'policy = "{policy}"']
    assert [e["estimator"] for e in body["estimates"]["proposed"]] == ["ips", "snips", "dr"]
    if policy == "lin_ts":  # Monte Carlo: 200 draws x 8 arms a decision, 1,000,000 at most
        assert body["sample"] == 1_000_000 // (200 * 8)
        assert any("Monte Carlo" in w for w in body["warnings"])
    else:
        assert body["sample"] == 5000


def test_what_if_proposes_squarecb_with_its_greediness(console):
    body = get(
        console, "/experiments/synthetic_0/what-if?policy=squarecb&gamma_scale=50&sample=500"
    )
    assert body["proposed"]["gamma_scale"] == 50.0 and body["proposed"]["gamma_exponent"] == 0.5
    assert body["toml"] == [
        "[experiments.synthetic_0]",
        'policy = "squarecb"',
        "gamma_scale = 50.0",
    ]
    assert [e["estimator"] for e in body["estimates"]["proposed"]] == ["ips", "snips", "dr"]


def test_what_if_of_the_current_settings_changes_nothing(console):
    body = get(console, "/experiments/synthetic_0/what-if?sample=500")
    assert body["toml"] == ["[experiments.synthetic_0]"]
    current, proposed = body["estimates"]["current"], body["estimates"]["proposed"]
    assert [e["value"] for e in current] == [e["value"] for e in proposed]


@pytest.mark.parametrize(
    "path, code, field",
    [
        ("/experiments/synthetic_0/summary?days=0", "invalid_field", "days"),
        ("/experiments/synthetic_0/daily?days=x", "invalid_field", "days"),
        ("/experiments/synthetic_0/arms?day=3", "unknown_field", "day"),
        ("/experiments/synthetic_0/what-if?alpha=-1", "invalid_field", "alpha"),
        ("/experiments/synthetic_0/what-if?epsilon=abc", "invalid_field", "epsilon"),
        ("/experiments/synthetic_0/what-if?policy=greedy", "invalid_field", "policy"),
        ("/experiments/synthetic_0/what-if?sample=5", "invalid_field", "sample"),
        ("/experiments/synthetic_0/what-if?gamma_exponent=2", "invalid_field", "gamma_exponent"),
        ("/ui/experiments/synthetic_0?days=400", "invalid_field", "days"),
    ],
)
def test_bad_query_parameters_get_a_json_400(console, path, code, field):
    response = console.get(path, headers=AUTH)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code
    assert response.get_json()["error"].get("field") == field


@pytest.mark.parametrize(
    "query, message",
    [
        ("alpha=", "alpha must be a number, got ''"),
        ("alpha=nan", "alpha must be a finite number, got 'nan'"),
        ("epsilon=abc", "epsilon must be a number, got 'abc'"),
        ("alpha=-1", "alpha must be"),
    ],
)
def test_what_if_says_what_is_wrong_with_a_parameter_in_its_own_words(console, query, message):
    response = console.get(f"/experiments/synthetic_0/what-if?{query}", headers=AUTH)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["message"].startswith(message)
    assert "--set" not in error["message"] and "experiments." not in error["message"]


@pytest.mark.parametrize("path", ["/experiments/nope/summary", "/ui/experiments/nope"])
def test_unknown_experiment_is_a_404(console, path):
    response = console.get(path, headers=AUTH)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_experiment"


CONSOLE_PATHS = [
    "/ui/",
    "/ui/experiments/home_feed",
    "/ui/static/console.js",
    "/experiments/home_feed/summary",
    "/experiments/home_feed/daily",
    "/experiments/home_feed/arms",
    "/experiments/home_feed/config-history",
    "/experiments/home_feed/what-if",
]


@pytest.mark.parametrize("path", CONSOLE_PATHS)
def test_console_takes_the_key_as_basic_password_or_bearer(console_app, path):
    assert console_app.get(path, headers=basic(API_KEY)).status_code == 200
    assert console_app.get(path, headers=basic(API_KEY, user="")).status_code == 200
    assert console_app.get(path, headers=bearer(API_KEY)).status_code == 200


@pytest.mark.parametrize("path", CONSOLE_PATHS)
def test_console_without_a_valid_key_asks_the_browser_to_sign_in(console_app, path):
    for headers in ({}, basic("wrong-key"), basic(""), bearer("wrong-key")):
        response = console_app.get(path, headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
        challenges = response.headers.getlist("WWW-Authenticate")
        assert challenges[0].startswith('Basic realm="banditd console"'), challenges


@pytest.mark.parametrize("path", CONSOLE_PATHS)
def test_console_needs_read_on_the_experiment(console_app, path):
    assert console_app.get(path, headers=basic("feed-reader")).status_code == 200
    assert console_app.get(path, headers=basic("all-reader")).status_code == 200
    refused = console_app.get(path, headers=basic("chooser"))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"


def test_read_on_one_experiment_reads_no_other(console_app):
    for path in ("/ui/experiments/synthetic_0", "/experiments/synthetic_0/summary"):
        assert console_app.get(path, headers=basic("feed-reader")).status_code == 403
    index = console_app.get("/ui/", headers=basic("feed-reader")).get_data(as_text=True)
    assert 'data-experiment="home_feed"' in index and "synthetic_0" not in index
    full = console_app.get("/ui/", headers=basic("all-reader")).get_data(as_text=True)
    assert 'data-experiment="synthetic_0"' in full and 'data-experiment="push_copy"' in full


def test_basic_sign_in_is_for_the_console_only(console_app):
    response = console_app.post("/choose", json={"experiment": "home_feed"}, headers=basic(API_KEY))
    assert response.status_code == 401
    assert response.headers.getlist("WWW-Authenticate") == ["Bearer"]
    assert console_app.get("/experiments", headers=basic(API_KEY)).status_code == 401
    # a reader of one experiment still cannot list them all (GET /experiments needs *:read)
    assert console_app.get("/experiments", headers=bearer("feed-reader")).status_code == 403
    assert console_app.get("/experiments", headers=bearer("all-reader")).status_code == 200


CATALOGUE_TOML = """
[experiments.offers]
policy = "beta_ts"
arms = "dynamic"
reward = { default = 0.0, window_seconds = 60, min = 0.0, max = 1.0 }
"""


def test_what_if_over_many_varied_candidates_keeps_its_work_bounded(client, worker, config_file):
    # beta_ts' quadrature over 60 candidates costs seconds a distinct set; a what-if over
    # thousands of such decisions once ran past gunicorn's timeout (found by fuzzing)
    from tests.test_config import rewrite

    rewrite(config_file, EXPERIMENTS_TOML + CATALOGUE_TOML)
    rng = np.random.default_rng(3)
    for _ in range(40):
        candidates = [f"offer_{n}" for n in rng.choice(300, size=60, replace=False)]
        body = {"experiment": "offers", "context": {}, "candidates": candidates}
        decision = client.post("/choose", json=body, headers=AUTH).get_json()
        arm = decision["arms"][0]["arm"]
        reward = {"decision_id": decision["decision_id"], "arm": arm, "reward": 1}
        assert client.post("/reward", json=reward, headers=AUTH).status_code == 202
    worker.run(until_idle=True)
    answer = client.get("/experiments/offers/what-if?policy=random&sample=3000", headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    # 40 sets of 60 candidates: 40 x 60² x 4,000 Beta CDF values is past the quadrature's
    # budget, so Monte Carlo over the ~40 arms shown: 200 x 40 draws a decision, all 40 fit
    assert body["sample"] == 40
    notes = [w for w in body["warnings"] if "Monte Carlo" in w]
    assert notes and notes[0].startswith("beta_ts's choice probabilities")
