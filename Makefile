# nextbest: `make` lists the targets. The two commands a newcomer needs:
#   make demo   - set everything up in .venv and run the main job end to end
#   make test   - run the whole test suite (lint, types, tests against a real Redis)
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# the lock file `make setup` installs: requirements/$(LOCK).txt (dev: every extra; see pyproject.toml)
LOCK ?= dev
CUSTOMERS ?= 100000
# Redis for the commands below: $NEXTBEST_REDIS_URL, else 127.0.0.1:6379, else one we start
REDIS = export NEXTBEST_REDIS_URL=$$($(BIN)/python scripts/ensure_redis.py)

.DEFAULT_GOAL := help
.PHONY: help setup lock demo world feature-store train serve test lint typecheck docs docs-serve bench loadtest clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# the venv starts with the uv version the lock pins (it is in the dev extra)
$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "$$(grep -oE '^uv==[^ ;]+' requirements/dev.txt)"

$(VENV)/.installed: requirements/$(LOCK).txt pyproject.toml | $(BIN)/python
	$(BIN)/uv pip sync -q -p $(BIN)/python requirements/$(LOCK).txt
	$(BIN)/uv pip install -q -p $(BIN)/python --no-deps -e .
	@touch $@

setup: $(VENV)/.installed ## create .venv and install exactly the lock (requirements/dev.txt) + the project

# Python 3.11 and up, every platform; hashes so an install checks what it downloads.
# serve.txt and train.txt are constrained by dev.txt: one version of each package everywhere.
LOCK_FLAGS = --custom-compile-command "make lock" --universal --python-version 3.11 --generate-hashes --quiet $(if $(UPGRADE),--upgrade)
lock: | $(BIN)/python ## regenerate requirements/*.txt from pyproject.toml (UPGRADE=1: newest versions)
	$(BIN)/uv pip compile pyproject.toml --all-extras $(LOCK_FLAGS) -o requirements/dev.txt
	$(BIN)/uv pip compile pyproject.toml --extra serve -c requirements/dev.txt $(LOCK_FLAGS) \
	  -o requirements/serve.txt
	$(BIN)/uv pip compile pyproject.toml --extra train --extra postgres --extra load \
	  -c requirements/dev.txt $(LOCK_FLAGS) -o requirements/train.txt

demo: setup ## THE main job: world -> feature store -> models -> bundle -> service + log exporter -> decisions
	@$(REDIS) && \
	$(BIN)/python -m training all --customers $(CUSTOMERS) --online both && \
	$(BIN)/python -m service.demo

world: setup ## generate the synthetic world only (CUSTOMERS=100000)
	$(BIN)/python -m training generate --customers $(CUSTOMERS)

feature-store: setup ## feast apply + materialize (ONLINE=sqlite|redis|both)
	@$(REDIS) && \
	$(BIN)/python -m training feature-store --online $(or $(ONLINE),sqlite)

train: setup ## train, evaluate, register, promote, export the bundle (after make demo/world)
	$(BIN)/python -m training train && $(BIN)/python -m training promote && \
	$(BIN)/python -m training export-bundle

serve: setup ## start the production server with this machine's local keys (var/secrets/)
	@$(REDIS) && eval "$$($(BIN)/python -m service.localkeys --env)" && \
	echo "API key: $$(cat var/secrets/api-key)  (Authorization: Bearer <key>)" && \
	$(BIN)/python -m service

lint: setup ## ruff check + ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup ## mypy --strict on service/ and training/
	$(BIN)/mypy

docs: setup ## build the documentation site into site/ (mkdocs build --strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs-serve: setup ## the documentation site with live reload on http://127.0.0.1:8001
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

test: setup lint typecheck docs ## THE whole test suite (starts a redis-server if none answers)
	@export NEXTBEST_TEST_REDIS_URL=$${NEXTBEST_TEST_REDIS_URL:-$$($(BIN)/python scripts/ensure_redis.py)} && \
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup ## benchmark vs a Feast SDK + LightGBM baseline, in-process and over HTTP (after make demo)
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
	    apt-get install -y -q wrk >/dev/null 2>&1; }; }; } || \
	  echo "!!! wrk is not installed and could not be: the HTTP part of the benchmark is SKIPPED"
	$(BIN)/python -m loadtests.bench $(BENCH_ARGS)

loadtest: setup ## Locust mix against a running service, e.g. make serve (HOST= USERS=20 DURATION=60s)
	NEXTBEST_API_KEY=$${NEXTBEST_API_KEY:-$$(cat var/secrets/api-key 2>/dev/null)} \
	$(BIN)/locust -f loadtests/locustfile.py --headless -u $(or $(USERS),20) -r $(or $(USERS),20) \
	  -t $(or $(DURATION),60s) --host $(or $(HOST),http://127.0.0.1:8000)

clean: ## remove generated state (var/, the model bundle, the built docs site/)
	rm -rf var site models/*.onnx models/manifest.json
