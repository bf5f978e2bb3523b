# make run: create/reuse .venv, install clipd, start the daemon in the foreground on config.yaml.
# make test: install the test extras into .venv, then lint, type-check, and run the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config.yaml

.PHONY: run test lint typecheck pytest protos bench bench-pgvector clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run pip only when pyproject.toml changes.
$(VENV)/.daemon-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[daemon]'
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.daemon-installed

run: $(VENV)/.daemon-installed
	$(BIN)/clipd serve --config $(CONFIG)

test: lint typecheck pytest

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy

pytest: $(VENV)/.test-installed
	$(BIN)/python -m pytest

protos: $(VENV)/.test-installed
	$(BIN)/python protos/generate.py

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@ $(VENV)/.test-installed $(VENV)/.daemon-installed

# BENCH_ARGS=--quick for a short run.
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench $(BENCH_ARGS)

# pgvector at 1M rows (an hour or more on 2 cores); BENCH_ARGS="--rows 100000" for a short run.
bench-pgvector: $(VENV)/.bench-installed
	$(BIN)/python -m bench.pgvector $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
