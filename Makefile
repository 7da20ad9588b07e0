# healthtech-etl - every target bootstraps what it needs (venv in .venv, pinned dependencies).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BOOT ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip --disable-pip-version-check -q
LOCK        := requirements/lock.txt
ARGS        ?=
REQUIRE_APPROVAL ?=

.PHONY: help install install-dev up down etl queries run sample test test-unit test-integration \
        test-glue-local test-compat test-infra lint build-glue synth deploy bench lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.stamp-run: requirements/run.txt $(LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -c $(LOCK) -r requirements/run.txt
	$(PIP) install -c $(LOCK) --no-deps -e .
	@touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-run requirements/dev.txt
	$(PIP) install -c $(LOCK) -r requirements/dev.txt
	@touch $@

install: $(VENV)/.stamp-run ## Create .venv and install the pinned runtime dependencies

install-dev: $(VENV)/.stamp-dev ## install + test, AWS-mock, CDK and benchmark dependencies

up: ## Start PostgreSQL with Docker Compose (needs a Docker engine; settings from .env)
	docker compose up -d --wait

down: ## Stop the Docker Compose PostgreSQL
	docker compose down

etl: install ## Run the ETL only (ARGS="--as-of 2025-11-01 ..." to pass flags)
	$(VENV)/bin/healthtech-etl etl $(ARGS)

queries: install ## Answer the business questions on the loaded data
	$(VENV)/bin/healthtech-etl queries $(ARGS)

run: install ## ETL then business queries (embedded PostgreSQL unless DATABASE_URL / DB_HOST is set)
	$(VENV)/bin/healthtech-etl run $(ARGS)

sample: install ## Regenerate the sample workbooks in data/raw/
	$(VENV)/bin/healthtech-etl sample $(ARGS)

lint: install-dev ## ruff (target py39)
	$(VENV)/bin/ruff check src glue_job lambda infra tests benchmarks

test: install-dev lint build-glue ## The whole suite: unit, integration (real PostgreSQL), AWS chain (moto), CDK
	$(VENV)/bin/pytest -q -p no:cacheprovider tests

test-unit: install-dev
	$(VENV)/bin/pytest -q tests/unit

test-integration: install-dev
	$(VENV)/bin/pytest -q tests/integration

test-glue-local: install-dev build-glue ## The AWS chain alone: Lambda -> Step Functions -> Glue job (moto + real PostgreSQL)
	$(VENV)/bin/pytest -q tests/aws

test-infra: install-dev build-glue ## CDK assertions, cdk-nag and cfn-lint
	$(VENV)/bin/pytest -q tests/infra

test-compat: ## Glue's Python 3.9 library set (pyarrow 7 and 4 lanes), wheel installed as Glue's launcher does
	bash scripts/test-compat.sh

build-glue: install-dev ## Build the wheel (no Requires-Dist; must pip install --no-index --target) and stage it
	bash scripts/build-glue.sh

synth: install-dev build-glue ## cdk synth, fully offline (CDK CLI from npm, installed locally)
	bash scripts/cdk.sh synth

deploy: install-dev build-glue ## cdk deploy: fetches the RDS CA bundle, needs AWS credentials (CONTEXT="-c env=prod", REQUIRE_APPROVAL=never)
	REQUIRE_APPROVAL="$(REQUIRE_APPROVAL)" bash scripts/cdk.sh deploy $(CONTEXT)

bench: install-dev ## Benchmark vs baselines at 100k and 1M rows (ARGS="--rows 100000")
	$(PY) benchmarks/bench.py $(ARGS)

lock: install-dev ## Regenerate requirements/lock.txt from the dev venv
	$(PY) -m pip freeze --all --exclude-editable | grep -vE "^(healthtech|pip==)" > $(LOCK).new
	(echo "# Full pinned lock (constraints) for every venv of this project: generated with pip freeze."; \
	 echo "# Regenerate: make lock"; cat $(LOCK).new) > $(LOCK) && rm $(LOCK).new

clean: ## Remove venvs, build output, reports, logs and the embedded database
	rm -rf $(VENV) .venv-compat .venv-compat-pyarrow4 dist build reports logs .pgdata .pgdata-* infra/cdk.out infra/node_modules node_modules src/*.egg-info
