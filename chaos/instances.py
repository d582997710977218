"""Throwaway Redis and Postgres servers that a fault test may stop, crash and wipe.

The shared servers on this box (Redis :6379, Postgres cluster 15/main) serve
other people's tests, so every fault that takes a store away runs against
instances of our own: a ``redis-server`` on a free port with AOF on, and a
Postgres cluster initialised in a temporary directory and run as the
``postgres`` user (Postgres refuses to run as root). Both live in one
directory and leave nothing behind once closed.

    with own_stores(Path(tempfile.mkdtemp())) as (redis_server, postgres):
        ...  # redis_server.url(0), postgres.url; .kill() / .start() / .stop()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import psycopg2
import redis

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"
ROLE = DATABASE = PASSWORD = "banditd"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)


class OwnRedis:
    """A ``redis-server`` of our own: AOF on, data in ``directory``, on a fixed free port.

    ``fsync`` is ``always`` (every write is on disk before Redis answers: nothing
    acknowledged is lost even on a power cut) or ``everysec`` (up to a second of
    writes can be lost on an OS crash or power cut; a killed redis-server
    process loses nothing, its writes are already in the kernel).
    """

    def __init__(self, directory: Path, *, fsync: str = "always") -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        """The ``redis://`` URL of database ``db``."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        """A plain client (short timeouts) for checks and set-up."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def ping(self) -> bool:
        """True if the server answers."""
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def start(self, timeout: float = 20.0) -> None:
        """Start the server (loading its AOF, if any) and wait until it answers."""
        log = open(self.directory / "redis.log", "ab")
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        _wait(self._loaded, timeout, f"redis-server on port {self.port}")

    def _loaded(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        try:
            with self.client() as c:
                return c.info("persistence").get("loading") == 0
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """Crash the server (SIGKILL): what reached the AOF survives, nothing else."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM: it flushes the AOF and exits)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def wipe(self) -> None:
        """Lose every byte: crash the server, delete its files, start it empty."""
        self.kill()
        for name in ("appendonlydir", "dump.rdb"):
            path = self.directory / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        self.start()

    def close(self) -> None:
        """Stop the server; its directory is left to the caller."""
        self.kill()


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], *, check: bool = True, **options) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **options)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stderr}")
    return done


class OwnPostgres:
    """A Postgres 15 cluster of our own in ``directory``, run as the ``postgres`` user.

    ``init()`` runs initdb (trust authentication, 127.0.0.1 only), starts it and
    creates the role and database ``banditd``; ``stop()`` and ``start()``
    take it away and bring it back with its data.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.sockets = directory / "sockets"
        self.logfile = directory / "postgres.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        """The ``postgresql://`` URL of the banditd database."""
        return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(PG_USER)
        for path in paths:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        """Create, start and prepare the cluster (role and database ``banditd``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)
        for path in (self.data, self.sockets):
            path.mkdir(exist_ok=True)
        self.logfile.touch()
        self._chown(self.data, self.sockets, self.logfile)
        self.data.chmod(0o700)
        _run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    PG_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            )  # fmt: skip
        )
        self.start()
        with contextlib.closing(self._connect("postgres", PG_USER)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
                cur.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def _connect(self, database: str, user: str):
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, dbname=database, user=user, connect_timeout=3
        )

    def ready(self) -> bool:
        """True if the cluster accepts connections."""
        try:
            with contextlib.closing(self._connect("postgres", PG_USER)):
                return True
        except psycopg2.OperationalError:
            return False

    def start(self, timeout: float = 30.0) -> None:
        """Start the cluster and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        _run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.logfile),
                    "-w",
                    "-t",
                    str(int(timeout)),
                    "start",
                ]
            )  # fmt: skip
        )
        _wait(self.ready, timeout, f"postgres on port {self.port}")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the cluster: ``immediate`` is a crash (recovery from WAL at the next start),
        ``fast`` a clean shutdown that disconnects every client."""
        _run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
        )

    def migrate(self) -> None:
        """Create the banditd schema with ``banditd migrate``."""
        _run(
            [str(REPO / ".venv" / "bin" / "banditd"), "migrate"],
            cwd=REPO,
            env={**os.environ, "DATABASE_URL": self.url},
        )

    def close(self) -> None:
        """Stop the cluster; its directory is left to the caller."""
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")


@contextlib.contextmanager
def own_stores(directory: Path, *, fsync: str = "always") -> Iterator[tuple[OwnRedis, OwnPostgres]]:
    """A started ``OwnRedis`` and a migrated ``OwnPostgres`` under ``directory``; removed after.

    The ``postgres`` user must be able to reach ``directory`` (its parents traversable).
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)  # the postgres user must reach its cluster below it
    redis_server = OwnRedis(directory / "redis", fsync=fsync)
    postgres = OwnPostgres(directory / "postgres")
    try:
        redis_server.start()
        postgres.init()
        postgres.migrate()
        yield redis_server, postgres
    finally:
        redis_server.close()
        postgres.close()
        shutil.rmtree(directory, ignore_errors=True)
