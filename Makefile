# dbtflow: `make run` runs the tenant on the embedded DuckDB target; `make test` runs every check.
# Both bootstrap .venv from uv.lock on a fresh machine (python3 + pip are all that is needed).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
SYNCED := $(VENV)/.synced
PYTEST_ARGS ?=
# pytest's temporary folders per checkout: two checkouts testing at once must not prune each other's (pytest keeps 3)
PYTEST_TMP := /tmp/dbtflow-pytest-$(shell printf %s "$(CURDIR)" | md5sum | cut -c1-8)
# two pytest workers: most slow tests wait on servers and subprocesses; the tests on the local stack
# stay together on one worker (tests/conftest.py groups them)
PYTEST_WORKERS := -n 2 --dist loadgroup
BENCH_ARGS ?=
# `make run`'s Prefect server (scripts/run-server.sh): started once in the background, reused, `make stop` stops it
DBTFLOW_SERVER_HOME ?= $(CURDIR)/.dbtflow/prefect-home
DBTFLOW_SERVER_PORT ?= 4201
SERVER_ENV := DBTFLOW_SERVER_HOME=$(DBTFLOW_SERVER_HOME) DBTFLOW_SERVER_PORT=$(DBTFLOW_SERVER_PORT)
PARITY_BENCH_ARGS ?=
MAKE_RUN_BENCH_ARGS ?=
# requirements-prefect.txt: runtime pins for Prefect Cloud's managed pool (tests/unit/test_requirements.py checks it)
EXPORT_FLAGS := --frozen --no-dev --no-hashes --no-header --no-annotate --quiet

.PHONY: install run stop test lint secrets browser screenshots requirements bench bench-run bench-parity clean deploy-local stop-local

install: $(SYNCED)

$(SYNCED): uv.lock pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv sync --frozen --quiet --compile-bytecode
	@touch $(SYNCED)

# The tenant on DuckDB through the flow, against the background server (its UI shows the run; "View at" links to it)
run: install
	@$(SERVER_ENV) scripts/run-server.sh start
	PREFECT_HOME=$(DBTFLOW_SERVER_HOME) PREFECT_API_URL=http://127.0.0.1:$(DBTFLOW_SERVER_PORT)/api \
	  $(BIN)/dbtflow run --project-dir tenants/dbt_williamgrant --target local

stop:
	@$(SERVER_ENV) scripts/run-server.sh stop

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# detect-secrets over every tracked or unignored file, against the reviewed .secrets.baseline (scripts/check_secrets.py)
secrets: install
	$(BIN)/python scripts/check_secrets.py

test: lint secrets browser
	$(BIN)/pytest $(PYTEST_WORKERS) --basetemp=$(PYTEST_TMP) --durations=25 $(PYTEST_ARGS)

# Debian's chromium, for the headless check of the Prefect UI (tests/e2e/test_ui.py); sudo unless root
browser:
	@command -v chromium >/dev/null || { \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); log=$$(mktemp); echo "installing Debian's chromium (apt-get)"; \
	  apt="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get -y -qq"; \
	  { $$apt install --no-install-recommends chromium || \
	    { $$apt update && $$apt install --no-install-recommends chromium; }; } >$$log 2>&1 || \
	  { tail -20 $$log; echo "error: could not install chromium" >&2; exit 1; }; rm -f $$log; }

# Re-take docs/img/prefect-deployment.png and prefect-flow-run.png (the README's pictures) on a local stack
screenshots: install browser
	DBTFLOW_UPDATE_SCREENSHOTS=1 $(BIN)/pytest tests/e2e/test_ui.py -q

requirements: install
	$(BIN)/uv export $(EXPORT_FLAGS) -o requirements-prefect.txt

# bench/overhead.py: plain dbt vs dbtflow's engines on a synthetic project; e.g. BENCH_ARGS="--models 50 --repeat 1";
# then bench/make_run.py: the first and a later `make run` vs plain `dbt build` of the tenant (make bench-run alone)
bench: install
	$(BIN)/python bench/overhead.py $(BENCH_ARGS)
	$(BIN)/python bench/make_run.py $(MAKE_RUN_BENCH_ARGS)

bench-run: install
	$(BIN)/python bench/make_run.py $(MAKE_RUN_BENCH_ARGS)

# bench/parity.py: `dbtflow parity` on a generated pair of 20,000-node artifact sets; e.g. PARITY_BENCH_ARGS="--repeat 5"
bench-parity: install
	$(BIN)/python bench/parity.py $(PARITY_BENCH_ARGS)

clean: stop
	rm -rf .dbtflow tenants/*/target tenants/*/logs

# A Prefect server, a process work pool + worker and the deployment dbt_wg, on loopback (PIDs in .prefect-local/)
deploy-local: install
	scripts/local-stack.sh start

stop-local:
	scripts/local-stack.sh stop
