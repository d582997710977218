#!/usr/bin/env bash
# Run banditd for development: the online update worker in the background and
# gunicorn in front of it (`gunicorn -c gunicorn.conf.py wsgi:app`: the serving
# setup is in that file). `make run` starts Redis/Postgres and migrates first.
#
# Ctrl-C (SIGINT) or SIGTERM stops both and exits 0. If either process fails,
# the other is stopped and this script exits with the failed one's status.
#
# Environment (defaults in brackets):
#   PORT [8000], BANDITD_CONFIG [examples/experiments.toml],
#   BANDITD_API_KEYS [dev-key-change-me], REDIS_URL [redis://localhost:6379/0],
#   DATABASE_URL [postgresql://banditd:banditd@localhost:5432/banditd],
#   GUNICORN_WORKERS [2], STOP_TIMEOUT [20] seconds before stragglers get SIGKILL,
#   BANDITD_WORKER_METRICS_PORT [9465] (the worker's /metrics; the API's is
#   http://localhost:$PORT/metrics), BANDITD_METRICS [1], BANDITD_LOG_FORMAT
#   [text], BANDITD_LOG_LEVEL [INFO]. gunicorn.conf.py sets up the metrics
#   directory of gunicorn's processes (PROMETHEUS_MULTIPROC_DIR).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV_BIN=.venv/bin
DEV_KEY=dev-key-change-me

export BANDITD_CONFIG="${BANDITD_CONFIG:-examples/experiments.toml}"
export REDIS_URL="${REDIS_URL:-redis://localhost:6379/0}"
export DATABASE_URL="${DATABASE_URL:-postgresql://banditd:banditd@localhost:5432/banditd}"
PORT="${PORT:-8000}"
GUNICORN_WORKERS="${GUNICORN_WORKERS:-2}"
STOP_TIMEOUT="${STOP_TIMEOUT:-20}"

if [[ -z ${BANDITD_API_KEYS:-} ]]; then
    export BANDITD_API_KEYS="$DEV_KEY"
    echo "banditd: API key for this dev run: $DEV_KEY  (set BANDITD_API_KEYS to change it)"
else
    echo "banditd: API keys from BANDITD_API_KEYS"
fi

for exe in banditd gunicorn; do
    [[ -x $VENV_BIN/$exe ]] || { echo "error: $VENV_BIN/$exe missing; run 'make venv'" >&2; exit 1; }
done

worker_pid=""
web_pid=""

alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

# SIGTERM both, wait up to STOP_TIMEOUT, then SIGKILL what is left.
# A second Ctrl-C during this skips the wait.
stop_all() {
    trap 'echo "banditd: killing"; kill -KILL $worker_pid $web_pid 2>/dev/null || true' INT TERM
    local pid
    for pid in $web_pid $worker_pid; do
        alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
    done
    local deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$web_pid" || alive "$worker_pid"; do
        if ((SECONDS >= deadline)); then
            echo "banditd: still running after ${STOP_TIMEOUT}s; killing" >&2
            kill -KILL $web_pid $worker_pid 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    # reap them so no zombie outlives us
    wait $web_pid $worker_pid 2>/dev/null || true
}

on_signal() {
    echo
    echo "banditd: stopping (signal $1)"
    stop_all
    echo "banditd: stopped"
    exit 0
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

echo "banditd: config $BANDITD_CONFIG; Redis $REDIS_URL; worker + gunicorn ($GUNICORN_WORKERS workers) on http://0.0.0.0:$PORT"
if [[ ${BANDITD_METRICS:-1} != 0 ]]; then
    echo "banditd: metrics on http://localhost:$PORT/metrics (API) and http://localhost:${BANDITD_WORKER_METRICS_PORT:-9465}/metrics (worker)"
fi

"$VENV_BIN/banditd" worker &
worker_pid=$!

# gunicorn.conf.py reads PORT and GUNICORN_WORKERS (passed here with their
# defaults) and holds the rest of the serving setup (worker class, timeouts).
PORT="$PORT" GUNICORN_WORKERS="$GUNICORN_WORKERS" "$VENV_BIN/gunicorn" -c gunicorn.conf.py wsgi:app &
web_pid=$!

# Returns as soon as one of the two exits (or a trapped signal arrives, in
# which case the trap has already exited the script).
set +e
wait -n "$worker_pid" "$web_pid"
status=$?
set -e

if ! alive "$worker_pid"; then
    who="the worker"
else
    who="gunicorn"
fi
stop_all
# On Ctrl-C the whole process group gets SIGINT; a child that handles it and
# exits 0 can make bash skip its own trap, so a clean exit is a clean stop.
if ((status == 0)); then
    echo "banditd: stopped"
    exit 0
fi
echo "banditd: $who exited (status $status); stopped the rest" >&2
exit "$status"
