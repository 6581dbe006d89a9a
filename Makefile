# nextbest: `make` lists the targets. The two commands a newcomer needs:
#   make demo   - set everything up in .venv and run the main job end to end
#   make test   - run the whole test suite (lint, types, tests against a real Redis)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,load,local
CUSTOMERS ?= 100000
export NEXTBEST_DEV_MODE ?= 1

.DEFAULT_GOAL := help
.PHONY: help setup demo world feature-store train serve test lint typecheck bench loadtest clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip uv

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install -q -p $(BIN)/python -e ".[$(EXTRAS)]"
	@touch $@

setup: $(VENV)/.installed ## create .venv and install the project with its dev/load extras

demo: setup ## THE main job: world -> feature store -> models -> bundle -> sample decisions
	@export NEXTBEST_REDIS_URL=$$($(BIN)/python scripts/ensure_redis.py) && \
	$(BIN)/python -m training all --customers $(CUSTOMERS)

world: setup ## generate the synthetic world only (CUSTOMERS=100000)
	$(BIN)/python -m training generate --customers $(CUSTOMERS)

feature-store: setup ## feast apply + materialize (ONLINE=sqlite|redis|both)
	@export NEXTBEST_REDIS_URL=$$($(BIN)/python scripts/ensure_redis.py) && \
	$(BIN)/python -m training feature-store --online $(or $(ONLINE),sqlite)

lint: setup ## ruff check + ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup ## mypy --strict on service/ and training/
	$(BIN)/mypy

test: setup lint typecheck ## THE whole test suite (starts a redis-server if none answers)
	@export NEXTBEST_TEST_REDIS_URL=$${NEXTBEST_TEST_REDIS_URL:-$$($(BIN)/python scripts/ensure_redis.py)} && \
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean: ## remove generated state (var/, the model bundle)
	rm -rf var models/*.onnx models/manifest.json
