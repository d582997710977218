"""Run the service as real processes for tests: gunicorn and ``banditd worker``.

gunicorn runs with gunicorn.conf.py, as scripts/run.sh starts it.

gunicorn writes an access log with the serving process id (``%(p)s``), so that
a test can tell which web worker answered each probe request.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest
import requests

from tests.conftest import API_KEY, TEST_DATABASE_URL, TEST_REDIS_URL, poll

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
GUNICORN_CONF = REPO / "gunicorn.conf.py"
STREAK = 20  # consecutive answers with the new version before a change counts as seen
ACCESS_LOG_FORMAT = '%(p)s "%(r)s" %(s)s'
ACCESS_LINE = re.compile(r'^<(\d+)> "\S+ \S*[?&]probe=(\d+)\S* ')


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
    env: dict[str, str]
    http: requests.Session = field(default_factory=requests.Session)
    probes: int = 0
    extra_workers: list[subprocess.Popen] = field(default_factory=list)

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

    def stop(self) -> None:
        """Stop gunicorn, then the worker (and any added with ``add_worker``)."""
        self.http.close()
        stop(self.gunicorn)
        stop(self.worker)
        for proc in self.extra_workers:
            stop(proc)

    def workers(self) -> list[subprocess.Popen]:
        """Every ``banditd worker`` process started for this service (dead ones too)."""
        return [self.worker, *self.extra_workers]

    def add_worker(self) -> subprocess.Popen:
        """Start one more ``banditd worker`` with the same settings (its stderr: the worker log)."""
        with open(self.logs["worker"], "ab") as err:
            proc = start_worker(self.env, err)
        self.extra_workers.append(proc)
        return proc

    def replace_worker(self, old: subprocess.Popen) -> subprocess.Popen:
        """Start a new ``banditd worker`` in place of ``old`` (which must have exited)."""
        assert old.poll() is not None, "replace_worker: the old worker still runs"
        with open(self.logs["worker"], "ab") as err:
            new = start_worker(self.env, err)
        if old is self.worker:
            self.worker = new
        else:
            self.extra_workers[self.extra_workers.index(old)] = new
        return new

    def dump_logs(self) -> None:
        for name in ("worker", "gunicorn"):
            print(f"\n----- {name} stderr ({self.logs[name]}) -----\n{tail(self.logs[name])}")

    def save_logs(self, target: Path, prefix: str = "") -> None:
        """Copy the logs into ``target`` as ``<prefix><name>.log`` (they live in a temp dir)."""
        target.mkdir(parents=True, exist_ok=True)
        for name, path in self.logs.items():
            if path.exists():
                (target / f"{prefix}{name}.log").write_bytes(path.read_bytes())


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def running_service(config_text: str, tmp_path: Path, request) -> Iterator[Service]:
    """The service on a fresh experiments file holding ``config_text``, stopped at the end.

    The processes' logs are printed if the test (``request``) failed.
    """
    config_path = tmp_path / "experiments.toml"
    replace_atomically(config_path, config_text)
    failed_before = request.session.testsfailed
    svc = start_service(config_path, tmp_path)
    try:
        yield svc
    finally:
        svc.stop()
        if request.session.testsfailed > failed_before:
            svc.dump_logs()


def start_service(
    config_path: Path,
    log_dir: Path,
    *,
    web_workers: int = 2,
    redis_url: str = TEST_REDIS_URL,
    database_url: str = TEST_DATABASE_URL,
) -> Service:
    """Start ``banditd worker`` and gunicorn on a free port; return once both web workers are up.

    Both use the test Redis db and database (or ``redis_url`` / ``database_url``) and the
    experiments file at ``config_path``. On a start-up failure the processes are stopped
    and their logs printed.
    """
    port = free_port()
    env = {
        **os.environ,
        "BANDITD_CONFIG": str(config_path),
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "BANDITD_API_KEYS": API_KEY,
    }
    logs = {name: log_dir / f"{name}.log" for name in ("worker", "gunicorn", "access")}
    logs["access"].touch()
    with open(logs["worker"], "ab") as worker_err, open(logs["gunicorn"], "ab") as web_err:
        worker = start_worker(env, worker_err)
        gunicorn = subprocess.Popen(
            [
                str(VENV_BIN / "gunicorn"),
                # the serving setup of `make run` (worker class, timeouts, no control socket);
                # the options after it win over the file's
                "--config",
                str(GUNICORN_CONF),
                "--workers",
                str(web_workers),
                "--bind",
                f"127.0.0.1:{port}",
                "--access-logfile",
                str(logs["access"]),
                "--access-logformat",
                ACCESS_LOG_FORMAT,
                "wsgi:app",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=web_err,
        )
    svc = Service(
        base_url=f"http://127.0.0.1:{port}",
        config_path=config_path,
        worker=worker,
        gunicorn=gunicorn,
        logs=logs,
        env=env,
    )
    svc.http.headers["Authorization"] = f"Bearer {API_KEY}"
    # A new connection per request, as with the sync workers the service had before: gunicorn
    # keeps a connection to the process that accepted it, and the tests count on their probes
    # landing on every web worker.
    svc.http.headers["Connection"] = "close"
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
        poll(lambda: len(svc.web_workers()) == web_workers, timeout=20, interval=0.05)
    except BaseException:
        svc.dump_logs()
        svc.stop()
        raise
    return svc


def start_worker(env: dict[str, str], stderr) -> subprocess.Popen:
    """Start ``banditd worker`` with ``env``, its stderr appended to the open file ``stderr``."""
    return subprocess.Popen(
        [str(VENV_BIN / "banditd"), "worker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


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
