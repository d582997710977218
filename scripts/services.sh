#!/usr/bin/env bash
# Start, stop or show the Redis and Postgres that banditd needs on this box.
#
#   scripts/services.sh start    install (Debian packages) and start what is missing
#   scripts/services.sh stop     stop the Redis we started and the local Postgres cluster
#   scripts/services.sh status   say what is running
#   scripts/services.sh tools PACKAGE:COMMAND...
#                                install the Debian packages whose commands are
#                                missing (the real programs the tests drive)
#
# Idempotent: `start` on a box where everything runs only checks and returns.
#
# Redis
#   1. REDIS_URL set and answering PONG          -> use it, touch nothing.
#   2. something answering PONG on localhost:6379 -> use it; if its appendonly is
#      off we switch it on with CONFIG SET (runtime only, not written back to its
#      config file), because banditd acknowledges events once they are in Redis.
#      This also covers the case where installing Debian's redis-server started a
#      system instance through its init script (it does when no policy-rc.d
#      blocks it); we then use that one rather than start a second.
#   3. otherwise start our own, with AOF on, data under <repo>/.run/redis.
# Postgres
#   1. DATABASE_URL set and pg_isready on it      -> use it, touch nothing.
#   2. otherwise Debian's cluster 15/main on localhost:5432 (installed and
#      created if missing), run as the postgres user by pg_ctlcluster, with role
#      banditd (password banditd) and databases banditd and banditd_test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
REDIS_DIR="$RUN_DIR/redis"
REDIS_PORT=6379
REDIS_PIDFILE="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"

PG_VERSION=15
PG_CLUSTER=main
PG_BIN="/usr/lib/postgresql/$PG_VERSION/bin"
PG_PORT=5432
DB_ROLE=banditd
DB_PASSWORD=banditd
DB_NAMES=(banditd banditd_test)

REDIS_TIMEOUT=10   # seconds to wait for Redis to answer
PG_TIMEOUT=30      # seconds to wait for Postgres to accept connections

log() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- apt ------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        die "need to install $* but not root; install it yourself (apt-get install $*)"
    fi
    export DEBIAN_FRONTEND=noninteractive
    mkdir -p "$RUN_DIR"
    local apt_log="$RUN_DIR/apt.log"
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt: updating package lists"
        apt-get -o DPkg::Lock::Timeout=120 update >"$apt_log" 2>&1 \
            || { tail -n 20 "$apt_log" >&2; die "apt-get update failed (log: $apt_log)"; }
        APT_UPDATED=1
    fi
    log "apt: installing $*"
    # C.UTF-8 always exists, so initdb in the postgresql package's postinst
    # does not trip over a locale the environment names but the box lacks.
    LC_ALL=C.UTF-8 LANG=C.UTF-8 apt-get -o DPkg::Lock::Timeout=120 install -y \
        --no-install-recommends "$@" >>"$apt_log" 2>&1 \
        || { tail -n 20 "$apt_log" >&2; die "apt-get install $* failed (log: $apt_log)"; }
}

# --- Redis ----------------------------------------------------------------

redis_ping_url() { [[ "$(redis-cli -u "$1" ping 2>/dev/null)" == PONG ]]; }
redis_ping_local() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

# pid of the redis-server we started, if it is still running
our_redis_pid() {
    local pid
    [[ -f $REDIS_PIDFILE ]] || return 1
    pid="$(cat "$REDIS_PIDFILE" 2>/dev/null)" || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == redis-server* ]] || return 1
    echo "$pid"
}

# "on" / "off": is the local Redis writing an append-only file?
redis_aof() {
    case "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config get appendonly 2>/dev/null | sed -n 2p)" in
        yes) echo on ;;
        *) echo off ;;
    esac
}

redis_start() {
    if [[ -n ${REDIS_URL:-} ]]; then
        command -v redis-cli >/dev/null || apt_install redis-tools
        if redis_ping_url "$REDIS_URL"; then
            log "redis: using REDIS_URL (answers PONG)"
            return 0
        fi
        warn "REDIS_URL is set but does not answer PING; falling back to localhost:$REDIS_PORT" \
             "(banditd will still use REDIS_URL)"
    fi

    command -v redis-server >/dev/null || apt_install redis-server

    if redis_ping_local; then
        if our_redis_pid >/dev/null; then
            log "redis: already running on $REDIS_PORT (ours, AOF $(redis_aof))"
        else
            if [[ "$(redis_aof)" != on ]]; then
                # Someone else's Redis (e.g. the one Debian's package started):
                # turn AOF on at runtime so acknowledged events survive a crash.
                if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set appendonly yes >/dev/null 2>&1; then
                    log "redis: using the one already on $REDIS_PORT (not ours); switched AOF on (runtime only)"
                else
                    warn "redis on $REDIS_PORT is not ours and AOF could not be switched on"
                fi
            else
                log "redis: using the one already on $REDIS_PORT (not ours, AOF on)"
            fi
        fi
        return 0
    fi

    mkdir -p "$REDIS_DIR"
    # --save "": no RDB snapshots, the AOF (fsync every second) is the persistence.
    # "-::1" binds ::1 too when the box has IPv6 ("-" = skip if unavailable).
    redis-server --daemonize yes --port "$REDIS_PORT" --bind 127.0.0.1 -::1 \
        --dir "$REDIS_DIR" --appendonly yes --appendfsync everysec \
        --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" --save ""

    local deadline=$((SECONDS + REDIS_TIMEOUT))
    until redis_ping_local; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "$REDIS_LOG" >&2 2>/dev/null || true
            die "redis did not answer on $REDIS_PORT within ${REDIS_TIMEOUT}s (log: $REDIS_LOG)"
        fi
        sleep 0.1
    done
    log "redis: started on $REDIS_PORT (AOF $(redis_aof), data in ${REDIS_DIR#"$ROOT"/})"
}

redis_stop() {
    local pid
    if ! pid="$(our_redis_pid)"; then
        if command -v redis-cli >/dev/null && redis_ping_local; then
            log "redis: the one on $REDIS_PORT was not started by us; left running"
        else
            log "redis: not running"
        fi
        return 0
    fi
    # Plain SHUTDOWN (not NOSAVE): flushes and fsyncs the AOF before exiting.
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + REDIS_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            warn "redis (pid $pid) did not stop within ${REDIS_TIMEOUT}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$REDIS_PIDFILE"
    log "redis: stopped"
}

redis_status() {
    if ! command -v redis-cli >/dev/null; then
        log "redis: redis-cli not installed"
    elif [[ -n ${REDIS_URL:-} ]] && redis_ping_url "$REDIS_URL"; then
        log "redis: REDIS_URL answers PONG"
    elif redis_ping_local; then
        if our_redis_pid >/dev/null; then
            log "redis: running on $REDIS_PORT (ours, pid $(our_redis_pid), AOF $(redis_aof))"
        else
            log "redis: running on $REDIS_PORT (not ours, AOF $(redis_aof))"
        fi
    else
        log "redis: not running"
    fi
}

# --- Postgres -------------------------------------------------------------

pg_ready_local() { pg_isready -q -h localhost -p "$PG_PORT" >/dev/null 2>&1; }

# psql as the postgres superuser over the Unix socket (peer auth). cd / first:
# the postgres user may not be allowed into the current directory.
pg_super() {
    (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@")
}

pg_cluster_exists() { pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {f=1} END {exit !f}'; }
pg_cluster_online() { pg_lsclusters -h 2>/dev/null | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c && $4 ~ /^online/ {f=1} END {exit !f}'; }

pg_login_ok() {
    local db=$1
    PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=5 \
        psql -X -q -h localhost -p "$PG_PORT" -U "$DB_ROLE" -d "$db" -tAc 'select 1' >/dev/null 2>&1
}

pg_start() {
    if [[ -n ${DATABASE_URL:-} ]]; then
        command -v pg_isready >/dev/null || apt_install postgresql-client
        if pg_isready -q -d "$DATABASE_URL" >/dev/null 2>&1; then
            log "postgres: using DATABASE_URL (accepts connections)"
            return 0
        fi
        warn "DATABASE_URL is set but not accepting connections; falling back to local cluster" \
             "$PG_VERSION/$PG_CLUSTER (banditd will still use DATABASE_URL)"
    fi

    if [[ ! -x $PG_BIN/postgres ]]; then
        apt_install "postgresql-$PG_VERSION"
    fi
    if ! pg_cluster_exists; then
        log "postgres: creating cluster $PG_VERSION/$PG_CLUSTER"
        pg_createcluster --locale C.UTF-8 -p "$PG_PORT" "$PG_VERSION" "$PG_CLUSTER" >/dev/null
    fi

    local started=0
    if pg_cluster_online; then
        :
    elif pg_ready_local; then
        die "something else accepts connections on localhost:$PG_PORT but cluster" \
            "$PG_VERSION/$PG_CLUSTER is down; stop it or set DATABASE_URL"
    else
        # pg_ctlcluster runs the server as the cluster owner (postgres), never as root.
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
        started=1
    fi

    local deadline=$((SECONDS + PG_TIMEOUT))
    until pg_ready_local; do
        if ((SECONDS >= deadline)); then
            tail -n 20 "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log" >&2 2>/dev/null || true
            die "postgres did not accept connections on localhost:$PG_PORT within ${PG_TIMEOUT}s"
        fi
        sleep 0.2
    done
    if ((started)); then
        log "postgres: started cluster $PG_VERSION/$PG_CLUSTER on $PG_PORT"
    else
        log "postgres: already running ($PG_VERSION/$PG_CLUSTER on $PG_PORT)"
    fi

    # Fast path: role and databases are there and the password works.
    local db all_ok=1
    for db in "${DB_NAMES[@]}"; do pg_login_ok "$db" || all_ok=0; done
    if ((all_ok)); then
        log "postgres: role $DB_ROLE and databases ${DB_NAMES[*]} ok"
        return 0
    fi

    # Role: created if missing; LOGIN and the password are (re)set every time,
    # so a role left over with another password still ends up usable.
    pg_super <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_ROLE') THEN
        CREATE ROLE $DB_ROLE LOGIN;
    END IF;
END
\$\$;
ALTER ROLE $DB_ROLE WITH LOGIN PASSWORD '$DB_PASSWORD';
SQL
    for db in "${DB_NAMES[@]}"; do
        # CREATE DATABASE cannot run inside DO/a transaction; \gexec runs it only if missing.
        pg_super <<SQL
SELECT 'CREATE DATABASE $db OWNER $DB_ROLE'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \gexec
SQL
    done

    for db in "${DB_NAMES[@]}"; do
        pg_login_ok "$db" || die "cannot log in as $DB_ROLE to $db over TCP localhost:$PG_PORT (check pg_hba.conf)"
    done
    log "postgres: role $DB_ROLE and databases ${DB_NAMES[*]} ready (password login over TCP ok)"
}

pg_stop() {
    if ! command -v pg_lsclusters >/dev/null || ! pg_cluster_exists; then
        log "postgres: no cluster $PG_VERSION/$PG_CLUSTER"
    elif pg_cluster_online; then
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop
        log "postgres: stopped cluster $PG_VERSION/$PG_CLUSTER"
    else
        log "postgres: not running"
    fi
}

pg_status() {
    if [[ -n ${DATABASE_URL:-} ]] && command -v pg_isready >/dev/null \
            && pg_isready -q -d "$DATABASE_URL" >/dev/null 2>&1; then
        log "postgres: DATABASE_URL accepts connections"
    elif ! command -v pg_lsclusters >/dev/null || ! pg_cluster_exists; then
        log "postgres: no cluster $PG_VERSION/$PG_CLUSTER"
    elif pg_cluster_online; then
        if pg_login_ok banditd; then
            log "postgres: running ($PG_VERSION/$PG_CLUSTER on $PG_PORT), $DB_ROLE can log in"
        else
            log "postgres: running ($PG_VERSION/$PG_CLUSTER on $PG_PORT), $DB_ROLE cannot log in yet (run start)"
        fi
    else
        log "postgres: not running"
    fi
}

# --- tools the tests drive ----------------------------------------------

# tools PACKAGE:COMMAND...: install each Debian package whose command is missing.
tools_install() {
    local spec package command missing=()
    for spec in "$@"; do
        package="${spec%%:*}"
        command="${spec#*:}"
        command -v "$command" >/dev/null || missing+=("$package")
    done
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    else
        log "tools: $* present"
    fi
}

# --- main -----------------------------------------------------------------

case "${1:-}" in
    start) redis_start; pg_start ;;
    stop) redis_stop; pg_stop ;;
    status) redis_status; pg_status ;;
    tools) shift; tools_install "$@" ;;
    *) echo "usage: $0 start|stop|status|tools PACKAGE:COMMAND..." >&2; exit 2 ;;
esac
