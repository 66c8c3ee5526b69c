# `make dev` serves every function on http://localhost:3000 from a local Postgres behind
# PgBouncer in transaction mode; `make test` proves the data layer against the same stack.
# CI runs `make test` unchanged (.ci/run).

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
# A uv on PATH that runs here, or one bootstrapped into .tools/ (pyenv shims may not run).
UV := $(shell uv --version >/dev/null 2>&1 && command -v uv || echo .tools/bin/uv)
RUN := $(UV) run --frozen
SERVERLESS := node_modules/.bin/serverless

# Deploying: `make deploy STAGE=dev`. The architecture is serverless.yml's provider.architecture.
STAGE ?=
# The AWS region of every command that talks to AWS: REGION=..., else AWS_REGION, else
# serverless.yml's default. serverless.yml's provider.region is the one definition, which
# infra/stage.py reads too; the profile's region and AWS_DEFAULT_REGION play no part.
REGION ?=
region_option = $(if $(REGION), --region $(REGION))
require_stage = $(if $(STAGE),,$(error set STAGE, for example: make $@ STAGE=dev))

.PHONY: help install dev token test test-unit lint fmt function migrate migration stack-up stack-down \
	package deploy secret remove logs clean bench llvm-strip chromium

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install: .venv/.synced node_modules/.package-lock.json ## Install Python and npm dependencies

dev: install ## Start Postgres + PgBouncer, migrate, serve the functions on :3000
	$(RUN) python -m infra.dev

# USER only from the command line: the shell's own USER is a login name, not a user id.
# Only the Python environment as a prerequisite, so `$(make -s token)` captures just the token.
token: .venv/.synced ## Print a local access token: make token [USER=<uuid>] [ROLE=service_role|anon]
	@$(RUN) python -m infra.local_auth token $(if $(filter command line,$(origin USER)),--user $(USER)) $(if $(ROLE),--role $(ROLE))

test: install lint llvm-strip chromium ## Lint, then unit, integration, package and end-to-end tests (what CI runs)
	$(RUN) pytest

test-unit: install ## Unit tests only: no database, no build, seconds
	$(RUN) pytest -m "not (integration or e2e or package)"

lint: install ## ruff and mypy (strict)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

fmt: install ## Format and fix what ruff can
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

function: install ## Scaffold a function, its test and its serverless.yml entry: NAME=orders [KIND=plain]
	$(if $(NAME),,$(error name the function, for example: make function NAME=orders))
	$(RUN) python -m infra.scaffold $(NAME)$(if $(KIND), --kind $(KIND))

migrate: install ## Apply migrations: DIRECT_DATABASE_URL (env or .env), else the local stack; or STAGE's secret
ifdef STAGE
	$(RUN) python -m infra.stage migrate --stage $(STAGE)$(region_option)
else
	$(RUN) python -m infra.migrate
endif

migration: install ## New migration from the models, on a function's branch: MSG="add orders" [FUNCTION=orders]
	$(if $(MSG),,$(error describe the change, for example: make migration MSG="add orders"))
	$(RUN) python -m infra.migrate revision -m "$(MSG)"$(if $(FUNCTION), --function $(FUNCTION))

stack-up: install ## Start only the local Postgres + PgBouncer
	$(RUN) python -m infra.local_stack start

stack-down: install ## Stop the local Postgres + PgBouncer
	$(RUN) python -m infra.local_stack stop

# Both always rebuild, then check the zips against the working tree right before serverless.
# The wheels come from uv's cache when it holds them all, else from the index: a first build,
# or one after uv.lock changed, needs the network.
# Both refuse first, in one line, a stage with no Supabase URL; deploy also one whose reserved
# concurrency the AWS account cannot grant.
package: install llvm-strip ## Build the zips and package the stack, no AWS needed: STAGE=dev
	$(require_stage)
	$(RUN) python -m infra.stage check --offline --stage $(STAGE)$(region_option)
	$(RUN) python -m infra.package build
	$(RUN) python -m infra.package verify
	$(SERVERLESS) package --stage $(STAGE)$(region_option)

deploy: install llvm-strip ## Build the zips and deploy: make deploy STAGE=dev [REGION=eu-west-1]
	$(require_stage)
	$(RUN) python -m infra.stage check --stage $(STAGE)$(region_option)
	$(RUN) python -m infra.package build
	$(RUN) python -m infra.package verify
	$(SERVERLESS) deploy --stage $(STAGE)$(region_option)

secret: install ## Store the pooler URL for STAGE (SECRET=direct: the migrations' URL; SECRET=jwt: the legacy JWT secret)
	$(require_stage)
	$(RUN) python -m infra.stage secret --stage $(STAGE)$(region_option) $(if $(filter direct,$(SECRET)),--direct)$(if $(filter jwt,$(SECRET)),--jwt)

remove: install ## Delete the stage's stack, secrets included: make remove STAGE=dev
	$(require_stage)
	$(SERVERLESS) remove --stage $(STAGE)$(region_option)

# osls tails one function a call: without FUNCTION, one tail per function, each line prefixed
# with its function's name, polling every 3 s so that together they stay well under CloudWatch
# Logs' request quotas. Ctrl-C stops them all.
logs: install ## Tail a stage's logs: make logs STAGE=dev [FUNCTION=items] [REGION=eu-west-1]
	$(require_stage)
ifdef FUNCTION
	$(SERVERLESS) logs --function $(FUNCTION) --tail --stage $(STAGE)$(region_option)
else
	for function in $$($(RUN) python -m infra.package functions); do \
		$(SERVERLESS) logs --function $$function --tail --interval 3000 --stage $(STAGE)$(region_option) \
			| awk -v name=$$function '{ print name " | " $$0; fflush() }' & \
	done; wait
endif

bench: install llvm-strip ## Measure latency, exchanges, cold start, zip sizes, a burst (minutes; not in CI)
	$(RUN) python -m bench

clean: ## Remove installed dependencies and local state (stop the stack first)
	rm -rf .venv .tools node_modules .local .serverless dist .mypy_cache .ruff_cache .pytest_cache

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || $(call apt_or_explain,nodejs npm,npm)
	npm ci --no-audit --no-fund --loglevel=error

.tools/bin/uv:
	@python3 -c 'import ensurepip' 2>/dev/null || $(call apt_or_explain,python3-venv,python3-venv)
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# infra/slim.py strips the zips' shared libraries for either architecture with llvm-strip.
llvm-strip:
	@[ -n "$$LLVM_STRIP" ] || command -v llvm-strip >/dev/null || compgen -c llvm-strip- >/dev/null \
		|| $(call apt_or_explain,llvm,llvm-strip,llvm)

# tests/e2e/test_browser_cors.py calls the local API from pages in a real browser, headless.
chromium:
	@command -v chromium >/dev/null || $(call apt_or_explain,chromium,chromium,--cask chromium)

# Install Debian packages when root with apt-get, else stop with the command to run.
define apt_or_explain
{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1); \
  else echo "$(2) is missing: run 'sudo apt-get install -y $(1)' (macOS: 'brew install $(or $(3),node python)')" >&2; exit 1; fi; }
endef
