"""The console in a real browser: Debian's chromium driven by selenium, against a live stack.

gunicorn and ``banditd worker`` run as processes (tests/service_processes.py) on
a log with 9 days of synthetic history (``synthetic_0``, two config versions)
and live traffic sent through /choose and /reward (``home_feed``, a 20%
holdout, so the live model in Redis has learned). The pages must load without
a console error, draw every chart, show the figures of the SQL views, answer
the what-if for two settings, and sign in with HTTP Basic (and refuse a wrong
key). Screenshots go to a temporary directory printed by the test
(``-s`` shows it); docs/console.png is one of them.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``make test`` installs
Debian's ``chromium`` and ``chromium-driver``): without them the tests fail
and say so, they do not skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from datetime import datetime
import textwrap
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import redis
import requests
import sqlalchemy

from app.analytics.views import MATERIALISED, refresh_analyst_views
from app.config import load_config
from app.model_store import ModelStore
from app.services import database_engine
from bench.synthetic_log import seed
from tests.conftest import API_KEY, TABLES, TEST_REDIS_URL, poll, rows
from tests.service_processes import replace_atomically, start_service
from tests.test_console_data import SYNTHETIC_TOML, use_current_model

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,2800",
)
HOME_FEED_TOML = """
[experiments.home_feed]
policy = "linucb"
alpha = 1.0
epsilon = 0.1
arms = ["job_cleaning", "job_kitchen", "job_warehouse"]
reward = { default = 0.0, window_seconds = 900, min = 0.0, max = 1.0 }
holdout = 0.2
holdout_policy = "random"

[experiments.home_feed.features]
numeric = ["hour"]
categorical = { city = ["berlin", "hamburg"] }
"""
# live traffic: decisions per experiment, and each arm's click rate
LIVE = {"home_feed": 60, "synthetic_0": 240}
CLICK_RATE = {"job_cleaning": 0.1, "job_kitchen": 0.3, "job_warehouse": 0.6} | {
    f"arm_{a}": 0.05 + 0.03 * a for a in range(8)
}
CITIES = {"home_feed": ["berlin", "hamburg"], "synthetic_0": ["berlin", "hamburg", "munich"]}
BANDIT_RGB, HOLDOUT_RGB = (37, 99, 235), (234, 88, 12)  # console.js's BANDIT and HOLDOUT


def require_browser() -> None:
    """Fail, naming the package to install, if chromium or its driver is missing."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(
                f"{path} is missing: the console's browser tests need Debian's {package} "
                "(`make test` installs it; or `apt-get install chromium chromium-driver`)"
            )


@contextlib.contextmanager
def new_browser() -> Iterator:
    """A headless chromium with a fresh profile, its console log kept; quit and its
    profile removed on leaving."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in HEADLESS_FLAGS:
        options.add_argument(flag)
    # the console log, and the network events (what status each response had)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    with tempfile.TemporaryDirectory(prefix="banditd-chromium-") as profile:
        options.add_argument("--user-data-dir=" + profile)
        driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def stack(migrated_database, tmp_path_factory, request):
    """The live service on a seeded log plus live traffic; the views and the models up to date."""
    require_browser()
    client = redis.Redis.from_url(TEST_REDIS_URL)
    client.flushdb()
    engine = database_engine(migrated_database)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"TRUNCATE {', '.join(TABLES)}"))
    directory = tmp_path_factory.mktemp("console-stack")
    config_path = directory / "experiments.toml"
    replace_atomically(config_path, textwrap.dedent(HOME_FEED_TOML) + SYNTHETIC_TOML)
    history = seed(engine, impressions=20_000, days=9, seed=11)
    use_current_model(engine, config_path)
    svc = start_service(config_path, directory)
    failed_before = request.session.testsfailed
    try:
        for name, count in LIVE.items():
            send_live_traffic(svc.base_url, name, count)
        config, store = load_config(str(config_path)), ModelStore(client)
        for name, count in LIVE.items():
            wait_until_logged_and_learned(engine, store, config.get(name), count, history.end)
        # True only for a refresh that started now, after the live rows landed (the worker's
        # own refresh may hold the lock)
        poll(lambda: refresh_analyst_views(engine), timeout=30, interval=0.2)
        yield svc, engine
    finally:
        svc.stop()
        if request.session.testsfailed > failed_before:
            svc.dump_logs()
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"TRUNCATE {', '.join(TABLES)}"))
            for view in MATERIALISED:
                conn.execute(sqlalchemy.text(f"REFRESH MATERIALIZED VIEW {view}"))
        engine.dispose()
        client.flushdb()
        client.close()


def send_live_traffic(base_url: str, experiment: str, count: int) -> None:
    """``count`` decisions of ``experiment``, each rewarded 0 or 1 by its arm's click rate."""
    rng = np.random.default_rng(3)
    cities = CITIES[experiment]
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {API_KEY}"
        for i in range(count):
            context = {"hour": int(rng.integers(0, 24)), "city": cities[i % len(cities)]}
            answer = http.post(
                base_url + "/choose",
                json={"experiment": experiment, "context": context, "unit_id": f"user-{i}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            chosen = answer.json()
            arm = chosen["arms"][0]["arm"]
            reward = float(rng.random() < CLICK_RATE[arm])
            done = http.post(
                base_url + "/reward",
                json={"decision_id": chosen["decision_id"], "arm": arm, "reward": reward},
                timeout=10,
            )
            assert done.status_code == 202, done.text


def wait_until_logged_and_learned(
    engine, store: ModelStore, experiment, count: int, since: datetime
) -> None:
    """Poll until ``count`` rewards received ``since`` are in Postgres and learned."""
    poll(lambda: rewards_since(engine, experiment.name, since) == count, timeout=30, interval=0.1)
    poll(lambda: rewards_learned(store, experiment) == count, timeout=30)


def rewards_since(engine, experiment: str, since: datetime) -> int:
    found = rows(
        engine,
        "SELECT count(*) AS n FROM rewards WHERE experiment = :e AND received_at > :t",
        e=experiment,
        t=since,
    )
    return found[0]["n"]


def rewards_learned(store: ModelStore, experiment) -> int:
    """How many rewards the live model of ``experiment`` has learned, over its arms."""
    dim = experiment.features.dim
    found = store.load_scoring(experiment.name, experiment.model_id, list(experiment.arms), dim)
    return int(sum(p.n for p in found.values()))


@pytest.fixture(scope="module")
def browser(stack):
    with new_browser() as driver:
        yield driver


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("console-screenshots")
    print(f"\nconsole screenshots: {directory}")
    return directory


def signed_in_url(svc, path: str, key: str = API_KEY) -> str:
    """``path`` on the service with Basic credentials in the URL (user ``viewer``)."""
    return svc.base_url.replace("http://", f"http://viewer:{key}@") + path


def console_errors(driver) -> list[dict]:
    """The browser console's errors since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def open_page(driver, url: str) -> None:
    """Load ``url``; for an experiment page, wait until its data is drawn."""
    driver.get(url)
    loaded = (
        "const root = document.getElementById('console');"
        "return root ? root.dataset.loaded || '' : 'none'"
    )
    state = poll(lambda: driver.execute_script(loaded), timeout=20)
    if state not in ("true", "none"):
        pytest.fail(f"{url}: the page's data did not load ({state}): {console_errors(driver)}")


def document_responses(driver, path: str) -> list[dict]:
    """The responses to requests for ``path`` among the browser's network events so far."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            if response["url"].split("?")[0].endswith(path):
                found.append(response)
    return found


def screenshot(driver, path: Path) -> None:
    """Save the whole page as a PNG (the window sized to the page first)."""
    bottom = "return document.querySelector('footer').getBoundingClientRect().bottom + scrollY"
    driver.set_window_size(1280, int(driver.execute_script(bottom)) + 140)  # + the window frame
    driver.save_screenshot(str(path))


def text_of(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector).text.strip()


def colour_pixels(driver, canvas, rgb: tuple[int, int, int], tolerance: int = 30) -> int:
    """How many pixels of ``canvas`` are within ``tolerance`` of the colour ``rgb``."""
    return driver.execute_script(
        """
        const [canvas, r, g, b, tol] = arguments;
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i + 3] > 200 && Math.abs(data[i] - r) <= tol
                && Math.abs(data[i + 1] - g) <= tol && Math.abs(data[i + 2] - b) <= tol) n++;
        }
        return n;
        """,
        canvas,
        *rgb,
        tolerance,
    )


def f4(value) -> str:
    return "–" if value is None else f"{float(value):.4f}"


def test_index_lists_experiments_with_todays_figures_from_the_views(stack, browser, screenshots):
    svc, engine = stack
    open_page(browser, signed_in_url(svc, "/ui/"))
    assert console_errors(browser) == []
    screenshot(browser, screenshots / "index.png")
    today = rows(
        engine,
        "SELECT experiment, sum(decisions) AS decisions, "
        "max(mean_reward) FILTER (WHERE NOT holdout) AS mean FROM experiment_daily "
        "WHERE day = (now() AT TIME ZONE 'UTC')::date GROUP BY experiment",
    )
    assert {r["experiment"] for r in today} == {"home_feed", "synthetic_0"}
    for r in today:
        row = f'tr[data-experiment="{r["experiment"]}"]'
        assert text_of(browser, row + ' [data-field="decisions_today"]') == f"{r['decisions']:,}"
        assert text_of(browser, row + ' [data-field="reward_today"]') == f4(r["mean"])


def test_experiment_page_draws_its_charts_and_shows_the_views_figures(stack, browser, screenshots):
    from selenium.webdriver.common.by import By

    svc, engine = stack
    open_page(browser, signed_in_url(svc, "/ui/experiments/synthetic_0?days=10"))
    assert console_errors(browser) == []
    screenshot(browser, screenshots / "synthetic_0.png")

    reward_chart = browser.find_element(By.CSS_SELECTOR, "#chart-reward canvas")
    assert colour_pixels(browser, reward_chart, BANDIT_RGB) > 200, "the bandit's line is missing"
    assert colour_pixels(browser, reward_chart, HOLDOUT_RGB) > 200, "the holdout's line is missing"
    shares_chart = browser.find_element(By.CSS_SELECTOR, "#chart-shares canvas")
    for i, rgb in enumerate([(37, 99, 235), (22, 163, 74), (220, 38, 38)]):  # arm_0..arm_2
        assert colour_pixels(browser, shares_chart, rgb) > 100, f"arm_{i}'s share is missing"

    period = rows(
        engine,
        "SELECT holdout, sum(decisions) AS decisions, sum(reward_sum) / sum(rewarded) AS mean "
        "FROM experiment_daily WHERE experiment = 'synthetic_0' GROUP BY holdout",
    )
    for r in period:
        field = "holdout_mean" if r["holdout"] else "policy_mean"
        assert text_of(browser, f'#cards [data-field="{field}"]') == f4(r["mean"])
    arms = rows(
        engine,
        "SELECT arm, holdout, sum(impressions) AS impressions, "
        "sum(reward_sum) / sum(rewarded) AS mean FROM arm_daily "
        "WHERE experiment = 'synthetic_0' GROUP BY arm, holdout",
    )
    assert len(arms) == 16
    for r in arms:
        group = "holdout" if r["holdout"] else "policy"
        cell = f'#arms [data-arm="{r["arm"]}"][data-field="{group}_%s"]'
        assert text_of(browser, cell % "impressions") == f"{r['impressions']:,}"
        assert text_of(browser, cell % "mean") == f4(r["mean"])
    # the two seeded versions, then the one the live service logged (its config file's)
    history = rows(
        engine,
        "SELECT config_version FROM config_history WHERE experiment = 'synthetic_0' "
        "ORDER BY in_force_from DESC",
    )
    shown = browser.find_elements(By.CSS_SELECTOR, "#config-changes tbody tr")
    assert [r.get_attribute("data-version") for r in shown] == [
        h["config_version"] for h in history
    ]
    assert "alpha 1 → 0.5" in shown[-2].text and "arms +arm_7" in shown[-2].text
    assert "first version" in shown[-1].text


def test_what_if_answers_for_two_settings(stack, browser, screenshots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    svc, _ = stack
    open_page(browser, signed_in_url(svc, "/ui/experiments/synthetic_0?days=10"))
    learned = browser.find_elements(By.CSS_SELECTOR, '#arms [data-field="learned"]')
    assert (
        sum(int(c.text.replace(",", "")) for c in learned if c.text != "–") == LIVE["synthetic_0"]
    )
    estimates = browser.find_elements(By.CSS_SELECTOR, '#arms [data-field="model"]')
    assert sum("±" in c.text for c in estimates) >= 3

    def ask(changes: dict[str, str]) -> dict:
        form = browser.find_element(By.ID, "whatif-form")
        for name, value in changes.items():
            field = form.find_element(By.NAME, name)
            if name == "policy":
                Select(field).select_by_value(value)
            else:
                field.clear()
                field.send_keys(value)
        browser.execute_script("document.getElementById('whatif-result').replaceChildren()")
        form.find_element(By.TAG_NAME, "button").click()
        poll(lambda: browser.find_elements(By.CSS_SELECTOR, "#whatif-toml"), timeout=20)
        shown = {
            row.get_attribute("data-estimator"): {
                f: row.find_element(By.CSS_SELECTOR, f'[data-field="{f}"]').text
                for f in ("current", "proposed", "ess")
            }
            for row in browser.find_elements(By.CSS_SELECTOR, "#whatif-result tbody tr")
        }
        return {"shown": shown, "toml": text_of(browser, "#whatif-toml")}

    def expected(params: dict[str, str]) -> dict:
        query = {
            "policy": "linucb",
            "alpha": "0.5",
            "epsilon": "0.02",
            "v": "1.0",
            "sample": "3000",
        }
        answer = svc.http.get(
            svc.url("/experiments/synthetic_0/what-if"), params={**query, **params}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def agree(seen: dict, answer: dict) -> None:
        assert answer["sample"] == 3000  # the live decisions and the seeded ones settled before
        assert set(seen["shown"]) == {"ips", "snips", "dr"}
        for side in ("current", "proposed"):
            for e in answer["estimates"][side]:
                text = f"{e['value']:.4f} ({e['low']:.4f} to {e['high']:.4f})"
                assert seen["shown"][e["estimator"]][side] == text
        for e in answer["estimates"]["proposed"]:
            assert seen["shown"][e["estimator"]]["ess"] == f"{round(e['ess']):,}"

    first = ask({"epsilon": "0.5"})
    agree(first, expected({"epsilon": "0.5"}))
    assert first["toml"] == "[experiments.synthetic_0]\nepsilon = 0.5"
    screenshot(browser, screenshots / "synthetic_0_what_if.png")

    second = ask({"policy": "epsilon_greedy", "epsilon": "0.2"})
    agree(second, expected({"policy": "epsilon_greedy", "epsilon": "0.2"}))
    assert second["toml"] == '[experiments.synthetic_0]\npolicy = "epsilon_greedy"\nepsilon = 0.2'
    assert first["shown"]["snips"]["proposed"] != second["shown"]["snips"]["proposed"]
    assert console_errors(browser) == []


def test_basic_sign_in_works_and_a_wrong_key_is_refused(stack):
    svc, _ = stack
    bare = requests.get(svc.url("/ui/"), timeout=10)
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"].startswith('Basic realm="banditd console"')

    with new_browser() as driver:
        driver.get_log("performance")  # drop the start-up events
        driver.get(signed_in_url(svc, "/ui/experiments/home_feed", key="not-a-key"))
        # the browser got 401 with a Basic challenge and shows its sign-in prompt again
        # (headless: nothing); the page never loads
        refused = poll(lambda: document_responses(driver, "/ui/experiments/home_feed"))
        assert refused[-1]["status"] == 401
        challenge = {k.lower(): v for k, v in refused[-1]["headers"].items()}["www-authenticate"]
        assert challenge.startswith('Basic realm="banditd console"')
        assert not driver.find_elements("css selector", "#console")
        open_page(driver, signed_in_url(svc, "/ui/experiments/home_feed"))
        assert text_of(driver, "h1") == "home_feed"
