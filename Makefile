# Parley developer entry points. `make run` and `make test` install what is
# missing (venv, tools, Redis, Cassandra jars) and need nothing else.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STATE := $(CURDIR)/.state
export PARLEY_STATE_DIR := $(STATE)
export PATH := $(STATE)/bin:$(CURDIR)/$(VENV)/bin:$(PATH)

PROTOS := $(shell find protos -name '*.proto' | sort)

.PHONY: all venv tools proto proto-check infra-up infra-down infra-status run test test-unit lint lint-proto bench clean

all: test

# The venv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python >= 3.11 is required)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

tools:
	@deploy/local/tools.sh

# Regenerates Python code and type stubs from protos/ into services/parley.
proto: venv
	@scripts/gen-protos.sh services

lint-proto: tools
	buf lint

lint: venv lint-proto
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

infra-up:
	@deploy/local/infra.sh up

infra-down:
	@deploy/local/infra.sh down

infra-status:
	@deploy/local/infra.sh status

# Starts Redis, Cassandra and the four services; Ctrl-C stops everything.
run: venv tools infra-up
	$(PY) -m parley.devstack

# Unit, integration and end-to-end tests against the real local infrastructure.
test: venv tools infra-up
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

SCENARIO ?= smoke
bench: venv infra-up
	$(PY) -m bench $(SCENARIO)

clean:
	rm -rf $(VENV) build *.egg-info
