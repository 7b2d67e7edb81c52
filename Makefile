# dbtflow: `make run` runs the tenant on the embedded DuckDB target; `make test` runs every check.
# Both bootstrap .venv from uv.lock on a fresh machine (python3 + pip are all that is needed).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
SYNCED := $(VENV)/.synced
PYTEST_ARGS ?=
BENCH_ARGS ?=
# requirements-prefect.txt: runtime pins for Prefect Cloud's managed pool (tests/unit/test_requirements.py checks it)
EXPORT_FLAGS := --frozen --no-dev --no-hashes --no-header --no-annotate --quiet

.PHONY: install run test lint secrets requirements bench clean

install: $(SYNCED)

$(SYNCED): uv.lock pyproject.toml
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv sync --frozen --quiet
	@touch $(SYNCED)

run: install
	$(BIN)/dbtflow run --project-dir tenants/dbt_williamgrant --target local

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# detect-secrets over every tracked or unignored file, against the reviewed .secrets.baseline (scripts/check_secrets.py)
secrets: install
	$(BIN)/python scripts/check_secrets.py

test: lint secrets
	$(BIN)/pytest $(PYTEST_ARGS)

requirements: install
	$(BIN)/uv export $(EXPORT_FLAGS) -o requirements-prefect.txt

# bench/overhead.py: plain dbt vs dbtflow's engines on a synthetic project; e.g. BENCH_ARGS="--models 50 --repeat 1"
bench: install
	$(BIN)/python bench/overhead.py $(BENCH_ARGS)

clean:
	rm -rf .dbtflow tenants/*/target tenants/*/logs
