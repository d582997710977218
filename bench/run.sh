#!/usr/bin/env bash
# `make bench`: measure banditd on this box (see docs/BENCHMARKS.md).
#
# Uses its own Redis db and Postgres database so that it never touches dev or
# test data: BENCH_REDIS_URL [redis://localhost:6379/13] and BENCH_DATABASE_URL
# [postgresql://banditd:banditd@localhost:5432/banditd_bench]; the local
# banditd_bench database is created if missing. Installs wrk (Debian) if missing.
# Arguments go to `python -m bench.run` (e.g. --quick, --only freshness).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export REDIS_URL="${BENCH_REDIS_URL:-redis://localhost:6379/13}"
export DATABASE_URL="${BENCH_DATABASE_URL:-postgresql://banditd:banditd@localhost:5432/banditd_bench}"
LOCAL_DB=postgresql://banditd:banditd@localhost:5432/banditd_bench

die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if ! command -v wrk >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "wrk is missing and we are not root: apt-get install wrk"
    echo "bench: installing wrk"
    mkdir -p .run
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends wrk >.run/apt-wrk.log 2>&1 || {
        apt-get -o DPkg::Lock::Timeout=120 update >>.run/apt-wrk.log 2>&1
        apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends wrk >>.run/apt-wrk.log 2>&1
    } || { tail -n 20 .run/apt-wrk.log >&2; die "apt-get install wrk failed (log: .run/apt-wrk.log)"; }
fi

if [[ $DATABASE_URL == "$LOCAL_DB" ]] && ! PGCONNECT_TIMEOUT=5 psql -X -q "$DATABASE_URL" -tAc 'select 1' >/dev/null 2>&1; then
    echo "bench: creating database banditd_bench"
    (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres) <<'SQL'
SELECT 'CREATE DATABASE banditd_bench OWNER banditd'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'banditd_bench') \gexec
SQL
fi

mkdir -p bench/out
.venv/bin/banditd migrate >bench/out/migrate.log 2>&1 \
    || { tail -n 20 bench/out/migrate.log >&2; die "banditd migrate failed (log: bench/out/migrate.log)"; }
exec .venv/bin/python -m bench.run "$@"
