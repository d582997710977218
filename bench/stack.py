"""Start and stop what the benchmark measures: gunicorn (as scripts/run.sh runs it) and the worker.

Each process is started by the benchmark, bound to 127.0.0.1 on a free port,
and stopped by its own pid when the phase ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).absolute().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
GUNICORN_CONF = ROOT / "gunicorn.conf.py"  # the serving setup of scripts/run.sh


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct child pids of ``pid``."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def memory_kib(pid: int) -> dict[str, int]:
    """RSS, PSS and private (USS) memory of a process, in KiB, from smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name.strip()] = int(rest.split()[0])
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


def sync_config(out: Path) -> Path:
    """A gunicorn config file for the serving setup before gunicorn.conf.py: 2 sync workers.

    That is, gunicorn's defaults (``--workers`` comes from the command line), with
    the control socket off as scripts/run.sh had it. For comparisons only.
    """
    path = out / "gunicorn-sync.conf.py"
    path.write_text(
        "# scripts/run.sh before gunicorn.conf.py: gunicorn's defaults (sync workers)\n"
        "control_socket_disable = True\n"
    )
    return path


def process_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment for a child: ours, ``extra``, and this tree first on the import path."""
    return {**os.environ, **extra, "PYTHONPATH": str(ROOT)}


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Gunicorn:
    """``gunicorn -c gunicorn.conf.py --bind 127.0.0.1:PORT --workers N APP``: as scripts/run.sh.

    ``config`` replaces gunicorn.conf.py and ``extra`` adds options (they win over
    the file's): bench/slow_clients.py uses them to compare serving setups.
    """

    def __init__(
        self,
        app: str,
        workers: int,
        env: dict[str, str],
        log_dir: Path,
        *,
        config: Path | None = None,
        extra: list[str] | None = None,
    ) -> None:
        self.app = app
        self.workers = workers
        self.env = env
        self.config = config or GUNICORN_CONF
        self.extra = extra or []
        self.port = free_port()
        self.log_path = log_dir / f"gunicorn-{app.replace(':', '_')}-{workers}w.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Gunicorn":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        """Start gunicorn and wait until every worker has booted and the port answers."""
        cmd = [
            str(VENV_BIN / "gunicorn"),
            "--config",
            str(self.config),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            *self.extra,
            self.app,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=process_env(self.env), stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}); see {self.log_path}")
            if len(self.worker_pids()) == self.workers and self._answers():
                time.sleep(0.3)  # let the last worker finish importing
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not come up within {timeout}s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        """The pids of gunicorn's worker processes."""
        return children(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        """SIGTERM gunicorn (which stops its workers), SIGKILL after 15 s."""
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False


class UpdateWorker:
    """``banditd worker`` as make run starts it."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_path = log_dir / "worker.log"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def __enter__(self) -> "UpdateWorker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start the worker process (returns at once; the worker connects on its own)."""
        with open(self.log_path, "ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "banditd"), "worker"],
                cwd=ROOT,
                env=process_env(self.env),
                stdout=log,
                stderr=log,
            )

    def alive(self) -> bool:
        """True while the worker process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (finish the current batch and release leases), SIGKILL after 15 s."""
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None
