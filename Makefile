# Quick start: `make demo` (the whole product end to end on local sandboxes), `make test` (every test).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DAG    ?=
CONF   ?=

.PHONY: venv system-packages demo test sandboxes run bench bench-quick lint clean

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

test: venv
	$(PY) -m pytest

sandboxes: venv
	$(PY) -m include.runtime.sandboxes

run: venv
	@test -n "$(DAG)" || { echo "usage: make run DAG=<dag_id> [CONF='<json>']"; exit 2; }
	$(PY) -m include.runtime.run_dag $(DAG) '$(CONF)'

# Benchmarks through a real scheduler (LocalExecutor, PostgreSQL metadata DB on 127.0.0.1:5432):
# results in bench/results/latest.json.
bench: venv
	$(PY) -m bench.run

bench-quick: venv
	$(PY) -m bench.run --quick

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf .airflow .local .sandbox
