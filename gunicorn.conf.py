"""How gunicorn serves the API: ``gunicorn -c gunicorn.conf.py wsgi:app`` (what ``make run`` runs).

gunicorn also reads ``./gunicorn.conf.py`` by itself when started from the
repository root, so a bare ``gunicorn wsgi:app`` there gets these settings too.
Command-line options override them (the tests and the bench pass ``--bind``).

Why gevent: a connection that sends its request slowly must hold neither a
process nor a thread. ``python -m bench.slow_clients`` (connections dribbling
headers or a body at 1 byte/s for 15 s, 2 processes, probes of /healthz and
/choose every 50 ms) on 2 cores: with 8 dribblers, the sync workers this
replaces answered 6% of probes within 1 s. gthread holds a pool thread per
dribbler for as long as it dribbles (gunicorn 27 parses a request on the pool
thread, on a blocking socket with no read deadline), so it survives as many
slow clients as it has threads: with 16 threads a process, 100% at 8 and 16
dribblers, 47% at 32, 5% at 200. gevent gives each connection a greenlet of a
few KB: 100% at 8, 16, 32 and 200 dribblers, p99 under 11 ms.
"""

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn import glogging, util
from gunicorn.workers.ggevent import GeventWorker


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's ``util.write_error`` with a JSON body, in the API's error shape.

    gunicorn answers a request it cannot parse itself (a request line over its
    limit: 414, too many or too long headers: 431, a malformed line or header:
    400) before the app sees it, in HTML; every error of the API is
    ``{"error": {"code", "message"}}``, so these are too.
    """
    # the codes the app gives the same statuses (app/errors.py)
    code = "internal_error" if status_int == 500 else reason.lower().replace(" ", "_")
    body = json.dumps({"error": {"code": code, "message": mesg or reason}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin1") + body)


util.write_error = write_json_error  # gunicorn's workers call it through the module


class GracefulGeventWorker(GeventWorker):
    """gunicorn's gevent worker, ending a connection the way its sync and gthread workers do.

    gunicorn 27's gevent worker closes a connection outright after an answer
    that ends it. With request bytes still unread (a body refused with 413
    before it was read), the kernel then resets the connection, and the client
    may lose the answer. ``close_graceful`` sends FIN and drains what is left
    (at most 64 KiB or 2 s) first, as the sync and gthread workers do.
    """

    def handle_request(self, listener_name, req, sock, addr):
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except StopIteration:  # the answer ended the connection
            util.close_graceful(sock)
            raise


# PORT and GUNICORN_WORKERS: the environment contract of scripts/run.sh.
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# One process per core: the request path is CPU (numpy scoring) plus one Redis
# round trip, so more processes than cores only add context switches.
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))

# A greenlet per connection (gevent monkey-patches the worker before the app is
# imported, so redis-py's sockets and the app's threading.Locks cooperate).
worker_class = GracefulGeventWorker
# Connections one process holds at once, slow ones included; past this it stops
# accepting until one ends. Each costs a greenlet and a file descriptor, so the
# process needs `ulimit -n` above this (plus its Redis and Postgres sockets).
worker_connections = 1000

# In the gevent worker this is also the deadline for a request's headers: the
# request line and headers must arrive within `keepalive` seconds of the
# connection opening or of the previous answer, or the connection is closed.
# That is what frees a header dribbler; 5 s is far above what a client that is
# not trying to hold the connection needs, and short enough to recycle idle
# keep-alive connections of clients without a pool.
keepalive = 5
# The master restarts a process whose loop has not checked in for this long
# (a request that blocks the event loop: CPU, or a C call that does not yield).
timeout = 30
# On SIGTERM/restart, requests in flight get this long to finish. Answers take
# milliseconds; a connection still dribbling its body is not worth waiting for.
# Kept under scripts/run.sh's STOP_TIMEOUT (20 s) and the tests' stop (15 s).
graceful_timeout = 10

# Every route is a short path (/choose, /reward, /experiments, /healthz,
# /readyz, /openapi.json); clients send a handful of headers. These bound
# what one connection can make a process buffer before the app sees anything
# (bodies are bounded by the app: 64 KiB).
limit_request_line = 4094  # gunicorn's default, stated
limit_request_fields = 50
limit_request_field_size = 8190  # gunicorn's default: room for long bearer keys

# gunicorn >= 25 otherwise binds $XDG_RUNTIME_DIR or ~/.gunicorn/gunicorn.ctl,
# one path per user, which concurrent servers (make run, tests, bench) would
# take from each other and remove on exit.
control_socket_disable = True


# How long an API process waits on Postgres without a byte in either direction
# before giving up (see post_worker_init): what it waits for is a ping (/readyz)
# or a config version, milliseconds; app/services.py gives connecting 3 s.
POSTGRES_QUIET_SECONDS = 5.0


def wait_for_postgres(conn, timeout=None):
    """psycopg2's wait callback in a gevent worker: yield while Postgres is quiet, to a limit.

    As psycopg2's own ``extras.wait_select``, but waiting through gevent, so
    that other connections are served meanwhile. After ``POSTGRES_QUIET_SECONDS``
    of silence it raises OperationalError; psycopg2 then closes the connection
    (its state is unknown), and SQLAlchemy's pool drops it. Green mode does not
    apply libpq's ``connect_timeout``: this deadline replaces it.
    """
    import psycopg2
    from gevent.socket import wait_read, wait_write

    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        wait = wait_read if state == psycopg2.extensions.POLL_READ else wait_write
        quiet = psycopg2.OperationalError(f"Postgres quiet for {POSTGRES_QUIET_SECONDS:g} s")
        wait(conn.fileno(), timeout=POSTGRES_QUIET_SECONDS, timeout_exc=quiet)


def post_worker_init(worker):
    """Let psycopg2 yield to other connections while it waits on Postgres (gevent workers only).

    psycopg2 is C and does not use Python's sockets, so monkey-patching does not
    reach it: without this, a /readyz or config-version read waiting on a slow
    Postgres would stall every connection of the process. psycopg2 refuses COPY
    in this mode; the API does none (only ``banditd worker`` COPYs, another process).
    """
    if isinstance(worker, GeventWorker):
        import psycopg2.extensions

        psycopg2.extensions.set_wait_callback(wait_for_postgres)


# -- metrics and logs ----------------------------------------------------------
#
# BANDITD_METRICS=0 turns /metrics off; otherwise every web process writes its
# figures to files in PROMETHEUS_MULTIPROC_DIR, and /metrics (served by any
# one of them) sums the files, so totals count every process, dead ones too
# (prometheus-client's multiprocess mode). The directory must hold no files of
# an earlier run: an operator's PROMETHEUS_MULTIPROC_DIR is emptied at start,
# and without one a fresh temporary directory is made and removed at exit.
METRICS = os.environ.get("BANDITD_METRICS", "1").strip() not in ("0", "false", "no")
_made_metrics_dir = []  # the directory on_starting made, removed by on_exit


def on_starting(server):
    """Prepare the metrics directory (before any web process starts)."""
    if METRICS:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            path = Path(directory)
            path.mkdir(parents=True, exist_ok=True)
            for stale in path.glob("*.db"):
                stale.unlink()
        else:
            directory = tempfile.mkdtemp(prefix="banditd-metrics-")
            _made_metrics_dir.append(directory)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # the web processes inherit it


def post_fork(server, worker):
    """Log banditd's lines (and request lines) as BANDITD_LOG_FORMAT/LEVEL say, from the start.

    Runs in the new web process before gevent patches it and the app is
    imported, so it loads app/logs.py by path rather than importing the app.
    """
    _logs().configure_logging(
        os.environ.get("BANDITD_LOG_FORMAT", "text").strip().lower(),
        os.environ.get("BANDITD_LOG_LEVEL", "INFO").strip().upper(),
    )


class BanditdLogger(glogging.Logger):
    """gunicorn's logger, its own lines (start, worker boot and exit) as JSON too when asked."""

    def setup(self, cfg):
        super().setup(cfg)
        if os.environ.get("BANDITD_LOG_FORMAT", "text").strip().lower() == "json":
            formatter = _logs().formatter("json")
            for handler in self.error_log.handlers:
                handler.setFormatter(formatter)


logger_class = BanditdLogger


def child_exit(server, worker):
    """A web process ended: drop its live gauges (its counters keep counting in the totals)."""
    if METRICS and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory this run made."""
    for directory in _made_metrics_dir:
        shutil.rmtree(directory, ignore_errors=True)


def _logs():
    """app/logs.py, loaded by path: importing the ``app`` package would load the whole app."""
    path = Path(__file__).resolve().parent / "app" / "logs.py"
    spec = importlib.util.spec_from_file_location("banditd_logs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
