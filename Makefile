# Everything starts from python3, make and git: the first target bootstraps a pinned uv,
# uv installs the locked environment (uv.lock), and every other target runs inside it.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: dev test test-faults engines lint fmt bench clients clean help e2e-compose docker-compose-available
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-7s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	@touch $@

dev: $(VENV)/.synced  ## run the whole system (embedded; ENGINES=1: Apache Kafka + FerretDB)
ifeq ($(ENGINES),1)
	$(VENV)/bin/siteview-engines provision
	APP_ENV=$${APP_ENV:-development} $(VENV)/bin/siteview-dev --engines
else
	APP_ENV=$${APP_ENV:-development} $(VENV)/bin/siteview-dev
endif

engines: $(VENV)/.synced  ## provision Apache Kafka and FerretDB into .tools/engines
	$(VENV)/bin/siteview-engines provision

test: $(VENV)/.synced  ## the suite on the embedded stack, then on Apache Kafka + FerretDB
	$(VENV)/bin/python -m siteview_devstack.testrun $(PYTEST_ARGS)

# Each backend's pass records its scenarios in .data/faults/<backend>.json; RELIABILITY.md is
# rendered from both, whichever passed, and the target fails if either pass did.
test-faults: $(VENV)/.synced  ## fault injection on both backends; writes RELIABILITY.md
	rm -rf .data/faults
	$(VENV)/bin/siteview-engines provision
	SITEVIEW_TEST_BACKEND=engines $(VENV)/bin/python -m pytest tests/faults $(PYTEST_ARGS); \
	engines=$$?; \
	SITEVIEW_TEST_BACKEND=embedded $(VENV)/bin/python -m pytest tests/faults $(PYTEST_ARGS); \
	embedded=$$?; \
	$(VENV)/bin/python tests/faults/reliability.py && [ $$engines -eq 0 ] && [ $$embedded -eq 0 ]

bench: $(VENV)/.synced  ## measure the services against their ceilings; writes BENCHMARKS.md
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

# Each API's OpenAPI document (clients/openapi) and the TypeScript types the pinned
# openapi-typescript makes of it (clients/ts); `make test` fails while they are stale.
clients: $(VENV)/.synced  ## regenerate clients/: each API's OpenAPI and TypeScript types
	$(VENV)/bin/siteview openapi export

# The compose file's Kafka and MongoDB in a throwaway project of their own (its volumes are
# removed after), published on 127.0.0.1:9094 and :27017; the suite's processes run here.
COMPOSE_E2E = SITEVIEW_ENV_FILE=.env.example docker compose -p siteview-e2e
E2E_COMPOSE_ARGS = --ignore-glob='*/unit/*' --ignore=tests/common --ignore=tests/devstack --ignore=tests/deploy --ignore=tests/faults --ignore=tests/browser

e2e-compose: docker-compose-available $(VENV)/.synced  ## the suite on docker compose's Kafka and MongoDB
	@trap '$(COMPOSE_E2E) down -v --remove-orphans' EXIT; \
	$(COMPOSE_E2E) run --rm mongo-init && \
	$(COMPOSE_E2E) up -d --wait kafka mongo && \
	SITEVIEW_TEST_BACKEND=env KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9094 \
	MONGODB_URL='mongodb://127.0.0.1:27017/?directConnection=true' \
	$(VENV)/bin/pytest $(E2E_COMPOSE_ARGS) $(PYTEST_ARGS)

docker-compose-available:
	$(if $(shell docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1 && echo yes),,\
	$(error e2e-compose: needs Docker with its compose plugin and a running engine; none answers here))

lint: $(VENV)/.synced  ## ruff and mypy (strict) over the tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(VENV)/.synced  ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:  ## remove the local environments
	rm -rf $(VENV) $(TOOLS)
