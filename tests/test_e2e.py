"""End to end: gunicorn (2 workers) and the update worker as real processes.

A seeded synthetic environment (the best arm depends on the city) talks to the
service over HTTP; the test then checks that the service learned, that the
Postgres log holds exactly what was sent (explicit rewards, default rewards for
the impressions left unrewarded, config versions, the analysts' view), that the
live parameters equal a replay of the log, that a config change reaches every
gunicorn worker within seconds without resetting what was learned, and that an
invalid config file is rejected while the last good one stays in force.

gunicorn's access log names the serving process of each probe request
(tests/service_processes.py), so "every worker process sees the new config" is
checked, not assumed from luck.

Takes about 20 s; the figures it measures are printed in a "banditd e2e figures"
section of the pytest report. Like the rest of the suite it owns the test Redis db
and the test database while it runs: do not run two test sessions against them at once.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from app import keys
from app.config import load_config
from app.model_store import ModelStore
from tests.conftest import rows
from tests.e2e_checks import Sent, log_mismatches, table_counts, wait_for
from tests.service_processes import (
    STREAK,
    Service,
    replace_atomically,
    running_service,
    touch_every_worker,
    wait_until_every_worker,
)

EXPERIMENT = "e2e_city"
CITIES = ("berlin", "hamburg")
BEST_ARM = {"berlin": "a_berlin_best", "hamburg": "a_hamburg_best"}
ARMS = ("a_berlin_best", "a_hamburg_best", "a_never_best")
P_BEST, P_OTHER = 0.8, 0.2
WINDOW_SECONDS = 3
ROUNDS = 3000
SKIP_SHARE = 0.10  # rounds left unrewarded: they get the default when their window closes
LAST = 500  # accuracy is measured over the last LAST rounds
MIN_ACCURACY = 0.80
ALPHA_BEFORE, ALPHA_AFTER = 0.5, 2.0
MAX_RELOAD_SECONDS = 5.0
ROUNDS_AFTER_RELOAD = 200
SEED = 20240611


CONFIG_TOML = """\
# written by tests/test_e2e.py
[experiments.{name}]
policy = "{policy}"
alpha = {alpha}
epsilon = 0.05
arms = {arms}
reward = {{ default = 0.0, window_seconds = {window}, min = 0.0, max = 1.0 }}

[experiments.{name}.features]
categorical = {{ city = {cities} }}
intercept = true
"""


def config_text(alpha: float, policy: str = "linucb") -> str:
    def quoted(names):
        return "[" + ", ".join(f'"{n}"' for n in names) + "]"

    return CONFIG_TOML.format(
        name=EXPERIMENT,
        policy=policy,
        alpha=alpha,
        arms=quoted(ARMS),
        window=WINDOW_SECONDS,
        cities=quoted(CITIES),
    )


@pytest.fixture
def service(tmp_path: Path, engine, redis_client, request):
    """gunicorn (2 workers) + ``banditd worker`` on a clean database and Redis db."""
    with running_service(config_text(ALPHA_BEFORE), tmp_path, request) as svc:
        yield svc


# -- helpers over the log and the model -------------------------------------------------------


def learned_params(store: ModelStore, model_id: str) -> dict[str, tuple[float, np.ndarray]]:
    """Each arm's (n, theta) as the worker saved them."""
    found = store.load_scoring(EXPERIMENT, model_id, list(ARMS), dim=1 + len(CITIES))
    return {arm: (p.n, p.theta.copy()) for arm, p in found.items()}


def replay_log(engine, ridge: float = 1.0) -> dict[str, tuple[int, np.ndarray]]:
    """Each arm's (n, theta) rebuilt from the Postgres log alone (explicit + default rewards)."""
    learned = rows(
        engine,
        """
        SELECT i.arm, d.features, ir.reward
        FROM impression_rewards ir
        JOIN impressions i USING (decision_id, arm)
        JOIN decisions d USING (decision_id)
        WHERE ir.experiment = :e AND ir.reward IS NOT NULL""",
        e=EXPERIMENT,
    )
    dim = 1 + len(CITIES)
    out = {}
    for arm in ARMS:
        A, b, n = np.eye(dim) * ridge, np.zeros(dim), 0
        for r in learned:
            if r["arm"] == arm:
                x = np.array(r["features"])
                A += np.outer(x, x)
                b += r["reward"] * x
                n += 1
        out[arm] = (n, np.linalg.solve(A, b))
    return out


def choose(svc: Service, sent: Sent, city: str) -> dict:
    context = {"city": city}
    r = svc.post("/choose", {"experiment": EXPERIMENT, "context": context})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert len(answer["arms"]) == 1
    sent.decisions[answer["decision_id"]] = answer
    sent.contexts[answer["decision_id"]] = context
    return answer


def send_reward(svc: Service, sent: Sent, decision_id: str, arm: str, value: float) -> None:
    r = svc.post("/reward", {"decision_id": decision_id, "arm": arm, "reward": value})
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "accepted", r.text
    sent.explicit.add((decision_id, arm, value))


def play(
    svc: Service, sent: Sent, env: np.random.Generator, rounds: int, *, skip_share: float
) -> list[bool]:
    """``rounds`` of choose -> (maybe) reward; returns whether each chose the city's best arm."""
    hits = []
    for _ in range(rounds):
        city = CITIES[env.integers(len(CITIES))]
        skip = env.random() < skip_share
        won = env.random()  # drawn every round so the sequence does not depend on the arm
        answer = choose(svc, sent, city)
        arm = answer["arms"][0]["arm"]
        hits.append(arm == BEST_ARM[city])
        if skip:
            sent.unrewarded.add((answer["decision_id"], arm))
        else:
            p = P_BEST if arm == BEST_ARM[city] else P_OTHER
            send_reward(svc, sent, answer["decision_id"], arm, 1.0 if won < p else 0.0)
    return hits


def model_mismatches(engine, store: ModelStore, model_id: str, sent: Sent) -> list[str]:
    """Empty when every decision's reward is learned once and the params equal a log replay."""
    live = learned_params(store, model_id)
    total = sum(n for n, _ in live.values())
    if total != len(sent.decisions):
        return [f"the arms learned {total:g} rewards, expected {len(sent.decisions)}"]
    replay = replay_log(engine)
    problems = []
    for arm in ARMS:
        n_live, theta_live = live.get(arm, (0.0, np.zeros(1 + len(CITIES))))
        n_log, theta_log = replay[arm]
        if n_live != n_log or not np.allclose(theta_live, theta_log, rtol=1e-9, atol=1e-12):
            problems.append(
                f"{arm}: live n={n_live:g} theta={theta_live}, "
                f"replayed from the log n={n_log} theta={theta_log}"
            )
    return problems


def experiment_entry(body: dict) -> dict:
    [entry] = [e for e in body["experiments"] if e["name"] == EXPERIMENT]
    return entry


# -- the test ----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_end_to_end_learning_logging_and_config_reload(
    service: Service, engine, redis_client, request
):
    """Learn, log, reload the config, reject a bad one: all through the real processes."""
    test_started = time.monotonic()
    svc = service
    store = ModelStore(redis_client)
    figures: list[str] = []
    try:
        # -- 1. learn: the city's best arm wins most of the last rounds --------------------
        listed = experiment_entry(svc.get("/experiments")[1].json())
        v1, model_id = listed["config_version"], listed["model_id"]
        assert listed["alpha"] == ALPHA_BEFORE and listed["policy"] == "linucb"
        assert v1 == load_config(str(svc.config_path)).get(EXPERIMENT).version

        sent = Sent()
        env = np.random.default_rng(SEED)
        t = time.monotonic()
        hits = play(svc, sent, env, ROUNDS, skip_share=SKIP_SHARE)
        loop_seconds = time.monotonic() - t
        accuracy = sum(hits[-LAST:]) / LAST
        assert {a["config_version"] for a in sent.decisions.values()} == {v1}
        figures += [
            f"rounds: {ROUNDS} ({len(sent.explicit)} rewarded, {len(sent.unrewarded)} left to "
            f"the default reward) in {loop_seconds:.1f} s ({2 * ROUNDS / loop_seconds:.0f} req/s)",
            f"accuracy (best arm for the city) in the last {LAST} rounds: {accuracy:.3f} "
            f"(first {LAST}: {sum(hits[:LAST]) / LAST:.3f})",
        ]
        assert accuracy >= MIN_ACCURACY, figures[-1]

        # -- 2. the log holds exactly what was sent, and the model equals its replay --------
        log_seconds = wait_for(
            "the Postgres log",
            lambda: log_mismatches(engine, EXPERIMENT, sent, {v1: ALPHA_BEFORE}),
            timeout=30,
        )
        wait_for(
            "the learned parameters",
            lambda: model_mismatches(engine, store, model_id, sent),
            timeout=10,
        )
        figures.append(
            f"log complete {log_seconds:.1f} s after the last round "
            f"(reward window {WINDOW_SECONDS} s); rows: {table_counts(engine)}"
        )

        # -- 3. change alpha: every web worker picks it up, the learned params are kept -----
        before = learned_params(store, model_id)
        assert sum(n for n, _ in before.values()) == ROUNDS
        touch_every_worker(svc)
        replace_atomically(svc.config_path, config_text(ALPHA_AFTER))
        changed_at = time.monotonic()
        v2 = load_config(str(svc.config_path)).get(EXPERIMENT).version
        assert v2 != v1
        reload_seconds = wait_until_every_worker(
            svc,
            "/experiments",
            lambda b: experiment_entry(b)["config_version"] == v2,
            since=changed_at,
            timeout=15,
            invariant=lambda b: experiment_entry(b)["model_id"] == model_id,
        )
        figures.append(
            f"config reload picked up in {reload_seconds:.2f} s (first new answer "
            f"from the later of the 2 gunicorn workers, both busy before the write)"
        )
        print(figures[-1])
        assert reload_seconds <= MAX_RELOAD_SECONDS
        listed = experiment_entry(svc.get("/experiments")[1].json())
        assert (listed["config_version"], listed["model_id"], listed["alpha"]) == (
            v2,
            model_id,
            ALPHA_AFTER,
        )

        # Nothing was rewarded since: the stored params are untouched, and each /choose
        # scores with them and the new alpha (a reset model would score alpha * sqrt(2)).
        for i in range(10):
            city = CITIES[i % 2]
            answer = choose(svc, sent, city)
            assert answer["config_version"] == v2
            arm, score = answer["arms"][0]["arm"], answer["arms"][0]["score"]
            p = store.load_scoring(EXPERIMENT, model_id, [arm], dim=1 + len(CITIES))[arm]
            x = np.array([1.0] + [float(c == city) for c in CITIES])
            expected = p.theta @ x + ALPHA_AFTER * math.sqrt(x @ p.A_inv @ x)
            assert math.isclose(score, expected, rel_tol=1e-9), (answer, expected)
            sent.unrewarded.add((answer["decision_id"], arm))
        after = learned_params(store, model_id)
        for arm in ARMS:
            assert after[arm][0] == before[arm][0], arm
            np.testing.assert_array_equal(after[arm][1], before[arm][1])

        # ... and learning continues from the old counts.
        hits_after = play(svc, sent, env, ROUNDS_AFTER_RELOAD, skip_share=0.0)
        figures.append(
            f"accuracy over {ROUNDS_AFTER_RELOAD} rounds with alpha {ALPHA_AFTER}: "
            f"{sum(hits_after) / len(hits_after):.3f}"
        )

        # -- 4. an invalid file is rejected; the last good config stays in force -----------
        touch_every_worker(svc)
        replace_atomically(svc.config_path, config_text(ALPHA_AFTER, policy="nope"))
        rejected_at = time.monotonic()
        still_v2 = ("/experiments", lambda b: experiment_entry(b)["config_version"] == v2)
        reject_seconds = wait_until_every_worker(
            svc,
            "/readyz",
            lambda b: b["checks"]["config"].startswith("last change rejected"),
            since=rejected_at,
            timeout=15,
            interleave=still_v2,
            invariant=lambda b: b["checks"]["redis"] == "ok" and b["checks"]["postgres"] == "ok",
        )
        figures.append(
            f"invalid config reported by /readyz of both workers after "
            f"{reject_seconds:.2f} s; v2 kept in force"
        )
        for _ in range(STREAK):
            assert experiment_entry(svc.get("/experiments")[1].json())["config_version"] == v2
        answer = choose(svc, sent, "berlin")
        assert answer["config_version"] == v2
        sent.unrewarded.add((answer["decision_id"], answer["arms"][0]["arm"]))
        assert svc.worker.poll() is None and svc.gunicorn.poll() is None

        # fixing the file clears the complaint (same settings as v2, so the same version)
        replace_atomically(svc.config_path, config_text(ALPHA_AFTER))
        wait_until_every_worker(
            svc,
            "/readyz",
            lambda b: b["status"] == "ready",
            since=time.monotonic(),
            timeout=15,
            interleave=still_v2,
        )

        # -- 5. everything since the reload is logged and learned too ----------------------
        assert {a["config_version"] for a in list(sent.decisions.values())[ROUNDS:]} == {v2}
        wait_for(
            "the Postgres log after the reload",
            lambda: log_mismatches(engine, EXPERIMENT, sent, {v1: ALPHA_BEFORE, v2: ALPHA_AFTER}),
            timeout=30,
        )
        wait_for(
            "the learned parameters after the reload",
            lambda: model_mismatches(engine, store, model_id, sent),
            timeout=10,
        )
        final = learned_params(store, model_id)
        assert all(final[a][0] >= before[a][0] for a in ARMS)
        assert sum(n for n, _ in final.values()) == sum(n for n, _ in before.values()) + (
            len(sent.decisions) - ROUNDS
        )
        assert redis_client.xlen(keys.stream(EXPERIMENT)) == 0  # nothing left unprocessed
        assert redis_client.zcard(keys.pending(EXPERIMENT)) == 0  # every window closed

        served = Counter(svc.probe_pids().values())
        figures += [
            f"learned n per arm: before reload { ({a: int(before[a][0]) for a in ARMS}) }, "
            f"at the end { ({a: int(final[a][0]) for a in ARMS}) }",
            f"rows at the end: {table_counts(engine)}",
            f"probe requests served per gunicorn worker: {dict(served)}",
            f"total test time: {time.monotonic() - test_started:.1f} s",
        ]
    finally:
        print("\n".join(["", "banditd e2e figures:", *(f"  {f}" for f in figures)]))
    # show the figures without -s too
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    if capture is not None and reporter is not None and capture.is_capturing():
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.section("banditd e2e figures", sep="-")
            for line in figures:
                reporter.write_line(line)
