"""End to end: gunicorn (2 workers) and the update worker as real processes.

A seeded synthetic environment (the best arm depends on the city) talks to the
service over HTTP; the test then checks that the service learned, that the
Postgres log holds exactly what was sent (explicit rewards, default rewards for
the impressions left unrewarded, config versions, the analysts' view), that the
live parameters equal a replay of the log, that a config change reaches every
gunicorn worker within seconds without resetting what was learned, and that an
invalid config file is rejected while the last good one stays in force.

gunicorn writes an access log with the serving process id (``%(p)s``) so that
the test can tell which worker answered each probe request: "every worker
process sees the new config" is then checked, not assumed from luck.

Takes about 20 s; the figures it measures are printed in a "banditd e2e figures"
section of the pytest report. Like the rest of the suite it owns the test Redis db
and the test database while it runs: do not run two test sessions against them at once.
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import requests

from app import keys
from app.config import load_config
from app.model_store import ModelStore
from tests.conftest import API_KEY, TEST_DATABASE_URL, TEST_REDIS_URL, poll, rows

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"

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
STREAK = 20  # consecutive answers with the new version before a change counts as seen
ROUNDS_AFTER_RELOAD = 200
SEED = 20240611

ACCESS_LOG_FORMAT = '%(p)s "%(r)s" %(s)s'
ACCESS_LINE = re.compile(r'^<(\d+)> "\S+ \S*[?&]probe=(\d+)\S* ')

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


def replace_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a sibling temp file and rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_pids(parent: int) -> set[int]:
    """Live children of ``parent`` (Linux /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces, so split after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.add(int(entry))
    return found


def tail(path: Path, lines: int = 80) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


@dataclass
class Service:
    """The running processes, their logs, and an HTTP session with the API key."""

    base_url: str
    config_path: Path
    gunicorn: subprocess.Popen
    worker: subprocess.Popen
    logs: dict[str, Path]
    http: requests.Session = field(default_factory=requests.Session)
    probes: int = 0

    def url(self, path: str) -> str:
        return self.base_url + path

    def get(self, path: str) -> tuple[int, requests.Response]:
        """GET with a unique ``probe`` number the access log ties to the serving pid."""
        self.probes += 1
        sep = "&" if "?" in path else "?"
        return self.probes, self.http.get(self.url(f"{path}{sep}probe={self.probes}"), timeout=10)

    def post(self, path: str, body: dict) -> requests.Response:
        return self.http.post(self.url(path), json=body, timeout=10)

    def probe_pids(self) -> dict[int, int]:
        """probe number -> pid of the gunicorn worker that served it (from the access log)."""
        served = {}
        for line in self.logs["access"].read_text(errors="replace").splitlines():
            m = ACCESS_LINE.match(line)
            if m:
                served[int(m.group(2))] = int(m.group(1))
        return served

    def web_workers(self) -> set[int]:
        return child_pids(self.gunicorn.pid)

    def dump_logs(self) -> None:
        for name in ("worker", "gunicorn"):
            print(f"\n----- {name} stderr ({self.logs[name]}) -----\n{tail(self.logs[name])}")


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@pytest.fixture
def service(tmp_path: Path, engine, redis_client, request):
    """gunicorn (2 workers) + ``banditd worker`` on a clean database and Redis db."""
    config_path = tmp_path / "experiments.toml"
    replace_atomically(config_path, config_text(ALPHA_BEFORE))
    port = free_port()
    env = {
        **os.environ,
        "BANDITD_CONFIG": str(config_path),
        "REDIS_URL": TEST_REDIS_URL,
        "DATABASE_URL": TEST_DATABASE_URL,
        "BANDITD_API_KEYS": API_KEY,
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "gunicorn", "access")}
    logs["access"].touch()
    procs: list[subprocess.Popen] = []
    failed_before = request.session.testsfailed
    with open(logs["worker"], "wb") as worker_err, open(logs["gunicorn"], "wb") as web_err:
        procs.append(
            subprocess.Popen(
                [str(VENV_BIN / "banditd"), "worker"],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=worker_err,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    str(VENV_BIN / "gunicorn"),
                    "--workers",
                    "2",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--access-logfile",
                    str(logs["access"]),
                    "--access-logformat",
                    ACCESS_LOG_FORMAT,
                    # gunicorn >= 27 otherwise binds ~/.gunicorn/gunicorn.ctl, shared with any other
                    # gunicorn of this user (e.g. `make run`), and removes it on exit
                    "--no-control-socket",
                    "wsgi:app",
                ],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=web_err,
            )
        )
    svc = Service(
        base_url=f"http://127.0.0.1:{port}",
        config_path=config_path,
        worker=procs[0],
        gunicorn=procs[1],
        logs=logs,
    )
    svc.http.headers["Authorization"] = f"Bearer {API_KEY}"
    try:

        def healthy():
            for name, proc in (("worker", svc.worker), ("gunicorn", svc.gunicorn)):
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with status {proc.returncode} during start-up")
            try:
                return requests.get(svc.url("/healthz"), timeout=2).status_code == 200
            except requests.RequestException:  # refused, or accepted before a worker booted
                return False

        poll(healthy, timeout=20, interval=0.05)
        # both web workers import the app before the master counts them as booted
        poll(lambda: len(svc.web_workers()) == 2, timeout=20, interval=0.05)
    except BaseException:
        svc.dump_logs()
        for proc in reversed(procs):
            stop(proc)
        raise
    try:
        yield svc
    finally:
        svc.http.close()
        for proc in reversed(procs):  # gunicorn first, then the worker
            stop(proc)
        if request.session.testsfailed > failed_before:
            svc.dump_logs()


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


@dataclass
class Sent:
    """Everything the synthetic client sent and got back."""

    decisions: dict[str, dict] = field(default_factory=dict)  # decision_id -> /choose answer
    contexts: dict[str, dict] = field(default_factory=dict)  # decision_id -> context sent
    explicit: set[tuple[str, str, float]] = field(default_factory=set)
    unrewarded: set[tuple[str, str]] = field(default_factory=set)

    def shown(self) -> set[tuple[str, str]]:
        return {(d, a["arm"]) for d, ans in self.decisions.items() for a in ans["arms"]}


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


def log_mismatches(engine, sent: Sent, versions: dict[str, float]) -> list[str]:
    """What the Postgres log still lacks or has wrong; empty when it matches ``sent`` exactly.

    ``versions`` maps each config version decisions were made under to its alpha.
    """
    n = len(sent.decisions)
    counts = rows(
        engine,
        """
        SELECT (SELECT count(*) FROM decisions) AS decisions,
               (SELECT count(*) FROM impressions) AS impressions,
               (SELECT count(*) FROM rewards WHERE kind = 'explicit') AS explicit,
               (SELECT count(*) FROM rewards WHERE kind = 'default') AS defaults,
               (SELECT count(*) FROM rewards WHERE kind = 'late') AS late""",
    )[0]
    expected = {
        "decisions": n,
        "impressions": len(sent.shown()),
        "explicit": len(sent.explicit),
        "defaults": len(sent.unrewarded),
        "late": 0,
    }
    if counts != expected:
        return [f"row counts {counts}, expected {expected}"]

    problems = []
    decisions = {
        r["decision_id"]: r
        for r in rows(
            engine, "SELECT decision_id, context, config_version, model_id, policy FROM decisions"
        )
    }
    if set(decisions) != set(sent.decisions):
        problems.append("decision ids differ from the ones /choose returned")
    for did, d in decisions.items():
        answer = sent.decisions.get(did)
        if answer and (
            d["context"] != sent.contexts[did] or d["config_version"] != answer["config_version"]
        ):
            problems.append(f"decision {did}: {d} does not match what was sent/answered")
            break

    impressions = rows(
        engine,
        "SELECT decision_id, arm, position, score, propensity, config_version FROM impressions",
    )
    if {(i["decision_id"], i["arm"]) for i in impressions} != sent.shown():
        problems.append("(decision_id, arm) of impressions differ from the ones /choose returned")
    for i in impressions:
        shown = sent.decisions.get(i["decision_id"], {"arms": [{}]})["arms"][0]
        if not (0.0 < i["propensity"] <= 1.0):
            problems.append(f"propensity out of (0, 1]: {i}")
            break
        if (
            i["position"] != 0
            or not math.isclose(i["propensity"], shown.get("propensity", -1))
            or not math.isclose(i["score"], shown.get("score", math.nan))
        ):
            problems.append(f"impression {i} does not match the /choose answer {shown}")
            break

    explicit = {
        (r["decision_id"], r["arm"], r["reward"])
        for r in rows(
            engine, "SELECT decision_id, arm, reward FROM rewards WHERE kind = 'explicit'"
        )
    }
    if explicit != sent.explicit:
        problems.append(
            f"explicit rewards differ: {len(explicit - sent.explicit)} unexpected, "
            f"{len(sent.explicit - explicit)} missing"
        )
    defaults = rows(engine, "SELECT decision_id, arm, reward FROM rewards WHERE kind = 'default'")
    if {(r["decision_id"], r["arm"]) for r in defaults} != sent.unrewarded:
        problems.append("default rewards are not exactly the unrewarded impressions")
    if any(r["reward"] != 0.0 for r in defaults):
        problems.append("a default reward is not 0.0")

    view = rows(
        engine,
        """SELECT count(*) AS n, count(reward) AS rewarded,
                                  count(DISTINCT (decision_id, arm)) AS distinct_impressions
                           FROM impression_rewards WHERE experiment = :e""",
        e=EXPERIMENT,
    )[0]
    if view != {"n": n, "rewarded": n, "distinct_impressions": n}:
        problems.append(
            f"impression_rewards: {view}, expected every one of {n} impressions "
            "exactly once with a reward"
        )

    logged = {
        r["config_version"]: r["settings"]
        for r in rows(
            engine,
            "SELECT config_version, settings FROM config_versions WHERE experiment = :e",
            e=EXPERIMENT,
        )
    }
    if set(logged) != set(versions):
        problems.append(f"config_versions {sorted(logged)}, expected {sorted(versions)}")
    elif any(logged[v]["alpha"] != alpha for v, alpha in versions.items()):
        problems.append(f"config_versions settings do not carry the alphas {versions}")
    return problems


def table_counts(engine) -> dict[str, int]:
    counts = {}
    for table in ("decisions", "impressions", "rewards", "config_versions"):
        counts[table] = rows(engine, f"SELECT count(*) AS n FROM {table}")[0]["n"]
    for kind in ("explicit", "default", "late"):
        counts[f"rewards.{kind}"] = rows(
            engine, "SELECT count(*) AS n FROM rewards WHERE kind = :k", k=kind
        )[0]["n"]
    counts["impression_rewards"] = rows(engine, "SELECT count(*) AS n FROM impression_rewards")[0][
        "n"
    ]
    return counts


def wait_for(what: str, check: Callable[[], list[str]], timeout: float) -> float:
    """Poll ``check`` (a list of problems) until it is empty; returns the seconds it took."""
    started = time.monotonic()
    last: list[str] = []

    def ok() -> bool:
        last[:] = check()
        return not last

    try:
        poll(ok, timeout=timeout, interval=0.2)
    except pytest.fail.Exception:
        pytest.fail(f"{what} not reached within {timeout}s: " + "; ".join(last[:5]))
    return time.monotonic() - started


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


# -- config changes seen by every web worker ---------------------------------------------------


def wait_until_every_worker(
    svc: Service,
    path: str,
    good: Callable[[dict], bool],
    *,
    since: float,
    timeout: float,
    invariant: Callable[[dict], bool] = lambda body: True,
    interleave: tuple[str, Callable[[dict], bool]] | None = None,
) -> float:
    """Poll GET ``path`` until each web worker answered ``good`` and the last STREAK all did.

    Returns the seconds from ``since`` (a ``time.monotonic()``) until the last web worker
    first answered ``good``; once a worker answered ``good`` it must never answer otherwise.
    Every answer must meet ``invariant``. ``interleave`` is another GET (and what its
    answers must meet) sent between polls, so that every process keeps looking at its
    config file.
    """
    workers = svc.web_workers()
    assert len(workers) == 2, workers
    answers: list[tuple[int, float, bool, dict]] = []  # (probe, seconds since `since`, good, body)
    deadline = time.monotonic() + timeout
    while True:
        probe, r = svc.get(path)
        assert r.status_code == 200, r.text
        body = r.json()
        assert invariant(body), body
        answers.append((probe, time.monotonic() - since, good(body), body))
        if interleave:
            _, other = svc.get(interleave[0])
            assert other.status_code == 200 and interleave[1](other.json()), other.text
        if len(answers) >= STREAK and all(g for _, _, g, _ in answers[-STREAK:]):
            served = svc.probe_pids()
            first_good: dict[int, float] = {}
            for probe_no, t, g, b in answers:
                pid = served.get(probe_no)
                if pid is None:
                    continue
                if g:
                    first_good.setdefault(pid, t)
                else:
                    assert pid not in first_good, f"worker {pid} went back to answering {b}"
            if set(first_good) >= workers:
                return max(first_good[pid] for pid in workers)
        if time.monotonic() > deadline:
            served = svc.probe_pids()
            pytest.fail(
                f"GET {path}: not every web worker {sorted(workers)} answered as expected "
                f"within {timeout}s; last answers (pid, s, ok): "
                f"{[(served.get(p), round(t, 2), g) for p, t, g, _ in answers[-10:]]}; "
                f"last body: {body}"
            )
        time.sleep(0.01)


def touch_every_worker(svc: Service, timeout: float = 10.0) -> None:
    """GET /experiments until each web worker served one since this call.

    Each worker then looks at its config file at most once per check interval (1 s), on
    a request; after an idle spell these requests start a new interval, so a change made
    right after is seen about one interval later: the reload time measured next is the
    one a busy service shows, not the instant pick-up of an idle one.
    """
    workers = svc.web_workers()
    first = svc.probes + 1
    deadline = time.monotonic() + timeout
    while True:
        svc.get("/experiments")
        served = {pid for probe, pid in svc.probe_pids().items() if probe >= first}
        if served >= workers:
            return
        assert time.monotonic() < deadline, f"only {served} of {workers} served /experiments"


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
            "the Postgres log", lambda: log_mismatches(engine, sent, {v1: ALPHA_BEFORE}), timeout=30
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
            lambda: log_mismatches(engine, sent, {v1: ALPHA_BEFORE, v2: ALPHA_AFTER}),
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
