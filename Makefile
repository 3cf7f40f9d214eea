# Quick start: `make demo` (the whole product end to end on local sandboxes), `make test` (every test).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DAG    ?=
CONF   ?=

.PHONY: venv system-packages demo test test-slow test-postgres test-all sandboxes run bench bench-quick lint clean up down

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

# Debian's chromium + chromedriver (browser test of the Sync page) and docker-compose (checks the compose file).
SYSTEM_PACKAGES := chromium chromium-driver docker-compose
system-packages:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v docker-compose >/dev/null \
	  || { $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq || true; \
	       $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); }

demo: venv
	$(PY) -m include.demo

# Every test but those that start an Airflow deployment (under 15 minutes here).
test: venv
	$(PY) -m pytest -m "not slow"

# The tests that take minutes each: CeleryExecutor on the local Redis + PostgreSQL, `make up`, a backfill
# run by a real scheduler, the crash-at-each-step-boundary kills and the convergence state machine.
test-slow: venv
	$(PY) -m pytest -m slow

# Every test that uses a state store, with the state store on PostgreSQL (127.0.0.1:5432) instead of SQLite.
test-postgres: venv
	DYNAMICS_SYNC_TEST_STATE=postgres $(PY) -m pytest -m "not slow" tests/e2e tests/unit tests/dags tests/ui

# What CI runs.
test-all: test test-slow test-postgres

sandboxes: venv
	$(PY) -m include.runtime.sandboxes

run: venv
	@test -n "$(DAG)" || { echo "usage: make run DAG=<dag_id> [CONF='<json>']"; exit 2; }
	$(PY) -m include.runtime.run_dag $(DAG) '$(CONF)'

# The product on this machine, in the foreground until Ctrl-C: the Airflow UI on http://127.0.0.1:8080 (no
# login), api-server, scheduler and dag-processor (LocalExecutor), both sandboxes with demo data, the metadata
# DB dynamics_sync_airflow and the state store dynamics_sync_state on 127.0.0.1:5432; files in .local/up.
# UP_ARGS='--fresh' starts over, '--port N' etc.: see `.venv/bin/python -m include.runtime.up --help`.
UP_ARGS ?=
up: venv
	$(PY) -m include.runtime.up $(UP_ARGS)

# Stops a `make up` running in another terminal (or what a killed one left behind).
down: venv
	$(PY) -m include.runtime.up --down $(UP_ARGS)

# Benchmarks through a real scheduler (LocalExecutor, PostgreSQL metadata DB on 127.0.0.1:5432):
# results in bench/results/latest.json. BENCH_ARGS='--only initial_copy_limited --profile' runs one scenario
# with py-spy over every process (bench/results/profile-*.txt); see `.venv/bin/python -m bench.run --help`.
BENCH_ARGS ?=
bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)

bench-quick: venv
	$(PY) -m bench.run --quick $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf .airflow .local .sandbox
