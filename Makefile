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

.PHONY: dev test engines lint fmt bench clean help
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-7s %s\n", $$1, $$2}'

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

bench: $(VENV)/.synced  ## benchmark the webhook → API pipeline on a stack it starts
	$(VENV)/bin/python bench/pipeline.py $(BENCH_ARGS)

lint: $(VENV)/.synced  ## ruff and mypy (strict) over the tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(VENV)/.synced  ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:  ## remove the local environments
	rm -rf $(VENV) $(TOOLS)
