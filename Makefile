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
CONFIRM_PROD ?=

.PHONY: help install install-dev check-python up down db-stop etl queries run sample test test-unit test-integration \
        test-glue-local test-compat test-infra lint build-glue synth diff deploy destroy destroy-guard db-setup ops backfill bench lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

# The pins in requirements/lock.txt (numpy 2.4, pandas 2.3) need Python 3.11 or newer.
# Python 3.9 is the AWS Glue runtime: it has its own lane (make test-compat), not this venv.
check-python: ## Check that PYTHON_BOOT can build the pinned venv (Python 3.11+ with venv)
	@$(PYTHON_BOOT) -c '' >/dev/null 2>&1 || { echo "make: $(PYTHON_BOOT) not found or not runnable - install Python 3.11 or newer, or point PYTHON_BOOT at one: make run PYTHON_BOOT=python3.12" >&2; exit 2; }
	@$(PYTHON_BOOT) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "make: $(PYTHON_BOOT) is Python $$($(PYTHON_BOOT) -c 'import platform; print(platform.python_version())'), but the pinned dependencies need 3.11 or newer - install one (e.g. pyenv install 3.12) and run: make run PYTHON_BOOT=python3.12 (Python 3.9 is only for the Glue lane: make test-compat)" >&2; exit 2; }
	@test -x $(PY) || $(PYTHON_BOOT) -c 'import ensurepip, venv' 2>/dev/null || { echo "make: $(PYTHON_BOOT) lacks the venv module - install it (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 2; }

$(VENV)/.stamp-run: requirements/run.txt $(LOCK) pyproject.toml
	@test -x $(PY) || $(MAKE) --no-print-directory check-python
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -c $(LOCK) -r requirements/run.txt
	$(PIP) install -c $(LOCK) --no-deps -e .
	@touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-run requirements/dev.txt
	$(PIP) install -c $(LOCK) -r requirements/dev.txt
	@touch $@

install: $(VENV)/.stamp-run ## Create .venv and install the pinned runtime dependencies

install-dev: $(VENV)/.stamp-dev ## install + test, AWS-mock, CDK and benchmark dependencies

# One line for each way Docker can be missing, instead of raw Docker errors.
DOCKER_CHECK = command -v docker >/dev/null 2>&1 || { echo "make: Docker is not installed - install Docker Engine with the Compose plugin, or skip Docker: 'make run' uses an embedded PostgreSQL" >&2; exit 2; }; \
	docker compose version >/dev/null 2>&1 || { echo "make: the Docker Compose plugin is missing ('docker compose') - install docker-compose-plugin, or skip Docker: 'make run' uses an embedded PostgreSQL" >&2; exit 2; }; \
	docker info >/dev/null 2>&1 || { echo "make: the Docker engine is not running or not accessible - start it (e.g. sudo systemctl start docker) or add yourself to the docker group; or skip Docker: 'make run'" >&2; exit 2; }

up: ## Start PostgreSQL with Docker Compose (needs a Docker engine; settings from .env)
	@$(DOCKER_CHECK)
	@test -f .env || { echo "make: no .env - run 'cp .env.example .env' and set DB_PASSWORD first" >&2; exit 2; }
	docker compose up -d --wait

down: ## Stop the Docker Compose PostgreSQL
	@$(DOCKER_CHECK)
	docker compose down

db-stop: ## Stop the embedded PostgreSQL in .pgdata/ (runs leave it running; idle 30 min: it stops itself)
	@if [ -x $(VENV)/bin/healthtech-etl ]; then $(VENV)/bin/healthtech-etl db stop; \
	 else echo "no .venv: nothing started the embedded PostgreSQL from here"; fi

etl: install ## Run the ETL only (ARGS="--as-of 2025-11-01 ..." to pass flags)
	$(VENV)/bin/healthtech-etl etl $(ARGS)

queries: install ## Answer the business questions on the loaded data
	$(VENV)/bin/healthtech-etl queries $(ARGS)

run: install ## ETL then business queries (embedded PostgreSQL unless DATABASE_URL / DB_HOST is set)
	$(VENV)/bin/healthtech-etl run $(ARGS)

sample: install ## Regenerate the sample workbooks in data/raw/
	$(VENV)/bin/healthtech-etl sample $(ARGS)

lint: install-dev ## ruff (target py39) and the import layers (import-linter, pyproject.toml)
	$(VENV)/bin/ruff check src glue_job lambda infra tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

test: install-dev lint build-glue ## The whole suite: unit, integration (real PostgreSQL), AWS chain (moto), CDK
	t=$$(mktemp -d "$${TMPDIR:-/tmp}/healthtech-pytest.XXXXXX") && $(VENV)/bin/pytest -q -p no:cacheprovider --basetemp="$$t" tests && rm -rf "$$t"

test-unit: install-dev
	t=$$(mktemp -d "$${TMPDIR:-/tmp}/healthtech-pytest.XXXXXX") && $(VENV)/bin/pytest -q --basetemp="$$t" tests/unit && rm -rf "$$t"

test-integration: install-dev
	t=$$(mktemp -d "$${TMPDIR:-/tmp}/healthtech-pytest.XXXXXX") && $(VENV)/bin/pytest -q --basetemp="$$t" tests/integration && rm -rf "$$t"

test-glue-local: install-dev build-glue ## The AWS chain alone: Lambda -> Step Functions -> Glue job (moto + real PostgreSQL)
	t=$$(mktemp -d "$${TMPDIR:-/tmp}/healthtech-pytest.XXXXXX") && $(VENV)/bin/pytest -q -p no:cacheprovider --basetemp="$$t" tests/aws && rm -rf "$$t"

test-infra: install-dev build-glue ## CDK assertions, cdk-nag and cfn-lint
	t=$$(mktemp -d "$${TMPDIR:-/tmp}/healthtech-pytest.XXXXXX") && $(VENV)/bin/pytest -q -p no:cacheprovider --basetemp="$$t" tests/infra && rm -rf "$$t"

test-compat: ## Glue's Python 3.9 library set, the staged wheels installed as Glue's launcher does
	bash scripts/test-compat.sh

build-glue: install-dev ## Build the wheel, stage it with python-calamine + packaging (pinned, verified) in dist/glue
	bash scripts/build-glue.sh

synth: install-dev build-glue ## cdk synth of HealthTechEtl-<env>, fully offline (CONTEXT="-c env=prod -c alertEmail=...")
	bash scripts/cdk.sh synth $(CONTEXT)

diff: install-dev build-glue ## cdk diff against the deployed HealthTechEtl-<env>, needs AWS credentials (CONTEXT as for deploy)
	bash scripts/cdk.sh diff $(CONTEXT)

deploy: install-dev build-glue ## cdk deploy: fetches the RDS CA bundle, needs AWS credentials (CONTEXT="-c env=prod -c alertEmail=...", REQUIRE_APPROVAL=never)
	REQUIRE_APPROVAL="$(REQUIRE_APPROVAL)" bash scripts/cdk.sh deploy $(CONTEXT)

# destroy-guard comes first: prod is refused (exit 2) before anything is built or cdk runs.
destroy: destroy-guard install-dev build-glue ## cdk destroy HealthTechEtl-<env> (prod: CONTEXT as for deploy and CONFIRM_PROD=yes; README "Teardown")
	CONFIRM_PROD="$(CONFIRM_PROD)" bash scripts/cdk.sh destroy $(CONTEXT)

# Database access on AWS (docs/aws.md "Database access"): need AWS credentials, like deploy.
db-setup: install-dev ## Create/update the ETL and reader DB roles on AWS (the deploy does it once; CONTEXT="-c env=prod")
	$(PY) scripts/db_access.py db-setup $(CONTEXT)

CMD ?= runs
ops: install-dev ## runs/rejections/report against the RDS database, as the read-only role (CMD="report --run-id X", CONTEXT)
	$(PY) scripts/db_access.py ops "$(CMD)" $(CONTEXT)

destroy-guard:
	@CONFIRM_PROD="$(CONFIRM_PROD)" bash scripts/cdk.sh check-destroy $(CONTEXT)

SOURCES ?=
backfill: install-dev ## Backfill every export under raw/ (or SOURCES="clinic-a clinic-b"): clinics in parallel, dates in order (CONTEXT)
	$(PY) infra/start_backfill.py $(CONTEXT) --sources "$(SOURCES)"

EXECUTION ?=
rerun: install-dev ## Start a failed ETL execution again with its input (EXECUTION=<execution ARN>, AWS credentials)
	$(PY) infra/rerun.py "$(EXECUTION)"

# The glue line needs the Python 3.9 stand-in (.venv-compat with glue-python-libs, scripts/test-compat.sh);
# without it the line is skipped with the reason and the results go to benchmarks/.cache/results/.
bench: install-dev ## Benchmark vs baselines, clean + messy files, 100k and 1M rows (ARGS="--rows 100000 --repeat 1")
	$(PY) benchmarks/bench.py $(ARGS)

lock: install-dev ## Regenerate requirements/lock.txt from the dev venv
	$(PY) -m pip freeze --all --exclude-editable | grep -vE "^(healthtech|pip==)" > $(LOCK).new
	(echo "# Full pinned lock (constraints) for every venv of this project: generated with pip freeze."; \
	 echo "# Regenerate: make lock"; cat $(LOCK).new) > $(LOCK) && rm $(LOCK).new

clean: ## Stop the embedded PostgreSQL, then remove venvs, build output, reports, logs and .pgdata/
	@if [ -d .pgdata ] && [ -x $(VENV)/bin/healthtech-etl ]; then $(VENV)/bin/healthtech-etl db stop --force; \
	 elif [ -f .pgdata/postmaster.pid ]; then pid=$$(head -n1 .pgdata/postmaster.pid); \
	   if tr '\0' ' ' <"/proc/$$pid/cmdline" 2>/dev/null | grep -q -- "-D $$(pwd)/.pgdata"; then \
	     kill -INT "$$pid"; for i in $$(seq 100); do kill -0 "$$pid" 2>/dev/null || break; sleep 0.1; done; fi; fi
	rm -rf $(VENV) .venv-compat dist build reports logs .pgdata .pgdata.lock .pgdata-* infra/cdk.out infra/node_modules node_modules src/*.egg-info
