# banditd — developer and CI entry points.
#
#   make run      start Redis + Postgres (installing them if needed), migrate,
#                 run the worker and gunicorn on :$(PORT) until Ctrl-C
#   make test     the test suite against real Redis and Postgres
#   make stop     stop the Redis and Postgres that `make run`/`make test` started
#   make bench    measure throughput, latency, worker drain, freshness, cost growth
#                 (about 15 minutes; writes bench/out/*.json and docs/BENCHMARKS.md)
#
# Set REDIS_URL / DATABASE_URL to use servers you already have.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(VENV)/bin/pip --quiet --disable-pip-version-check

PORT ?= 8000
# Debian packages (PACKAGE:COMMAND) whose real programs the tests drive; the
# Redis Cluster tests start their own redis-server nodes (scripts/redis_cluster.sh).
TEST_TOOLS := prometheus:promtool chromium:chromium chromium-driver:chromedriver \
              redis-server:redis-server redis-tools:redis-cli
PYTEST_ARGS ?=

# Defaults used only when the variable is not set in the environment. They are
# applied per command (not exported globally) so that services.sh can tell
# "the user pointed us at a server" from "use the local one".
DEFAULT_REDIS_URL    := redis://localhost:6379/0
DEFAULT_DATABASE_URL := postgresql://banditd:banditd@localhost:5432/banditd
APP_ENV  := REDIS_URL="$${REDIS_URL:-$(DEFAULT_REDIS_URL)}" \
            DATABASE_URL="$${DATABASE_URL:-$(DEFAULT_DATABASE_URL)}"
TEST_ENV := BANDITD_TEST_REDIS_URL="$${BANDITD_TEST_REDIS_URL:-redis://localhost:6379/15}" \
            BANDITD_TEST_DATABASE_URL="$${BANDITD_TEST_DATABASE_URL:-postgresql://banditd:banditd@localhost:5432/banditd_test}"

.PHONY: help venv services test-tools migrate run test stop clean-services status bench chaos

help:
	@echo "make run       start services, migrate, run worker + gunicorn on :$(PORT) (Ctrl-C stops)"
	@echo "make test      run the tests (PYTEST_ARGS='-k foo' to pass options)"
	@echo "make migrate   apply database migrations"
	@echo "make services  start Redis and Postgres only"
	@echo "make status    show what is running"
	@echo "make stop      stop the Redis and Postgres started here"
	@echo "make venv      create .venv and install the package (editable) with test and eval extras"
	@echo "make bench     benchmark on this box, ~15 min; rewrites docs/BENCHMARKS.md (BENCH_ARGS=--quick)"
	@echo "make chaos     faults under load, then Redis Cluster master kills, ~5.5 min; rewrites docs/RELIABILITY.md (CHAOS_ARGS=...)"

# Re-installs only when setup.cfg/pyproject.toml are newer than the stamp.
venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -e '.[test,eval]'
	@touch $@

services:
	@bash scripts/services.sh start

status:
	@bash scripts/services.sh status

stop clean-services:
	@bash scripts/services.sh stop

migrate: venv services
	$(APP_ENV) $(VENV)/bin/banditd migrate

run: venv services migrate
	@PORT=$(PORT) $(APP_ENV) bash scripts/run.sh

# The test suite migrates the test database itself; services.sh makes sure the
# default one (banditd_test) exists.
test-tools:
	@bash scripts/services.sh tools $(TEST_TOOLS)

test: venv services test-tools
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# Its own Redis db (13) and Postgres database (banditd_bench): never dev or test data.
bench: venv services
	@bash bench/run.sh $(BENCH_ARGS)

# Starts a Redis and a Postgres of its own (never the shared ones); see docs/RELIABILITY.md.
chaos: venv services
	$(PY) -m chaos.run $(CHAOS_ARGS)
