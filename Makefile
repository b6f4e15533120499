# ottrecon developer commands. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
export PYTHON
VENV := .venv
BIN := $(VENV)/bin
# Find or start Postgres and Redis (scripts/local_services.sh); fail loudly if it cannot.
SERVICES = services="$$(scripts/local_services.sh env)" && eval "$$services"

# Every install comes from uv.lock (docs/RELEASING.md). uv bootstraps itself from PyPI with the
# plain pip of $(PYTHON) into .tools/, at this exact version; it never downloads a Python.
UV_VERSION := 0.13.9
UV_HOME := .tools/uv-$(UV_VERSION)
UV := $(UV_HOME)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test check format unit soak chaos demo bench clean-data lock upgrade dist _run _test

$(UV):
	@scripts/prerequisites.sh run
	rm -rf $(UV_HOME)
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'

# The service (editable), the test extra and the dev group (simulator, honcho), exactly as locked.
# --locked refuses a uv.lock that no longer matches pyproject.toml: run `make lock` after editing it.
# --compile-bytecode: installed as pip installs a release (decision 0043), so no process start compiles
# the libraries again (where PYTHONDONTWRITEBYTECODE is set, every start would).
$(BIN)/.installed: pyproject.toml simulator/pyproject.toml uv.lock $(UV)
	$(UV) sync --locked --extra test --python $(PYTHON) --quiet --compile-bytecode \
		|| { echo 'make: if uv says the lock needs updating, run `make lock` (docs/RELEASING.md)' >&2; exit 1; }
	touch $@

## lock: regenerate uv.lock after changing dependencies in pyproject.toml (keeps every other pin)
lock: $(UV)
	$(UV) lock

## upgrade: move every dependency to its newest allowed version (review the diff; docs/RELEASING.md)
upgrade: $(UV)
	$(UV) lock --upgrade

## dist: the release artefacts in dist/: sdist, wheel (built from the sdist) and requirements.txt (runtime pins with hashes)
dist: $(UV)
	rm -rf dist
	$(UV) build --quiet --out-dir dist  # the sdist, then the wheel built from it
	$(UV) export --locked --quiet --no-dev --no-emit-project --no-emit-workspace --format requirements-txt \
		--output-file dist/requirements.txt
	@ls -1 dist

## run: install, migrate, and run receiver, worker, api and the gateway simulator in the foreground
## (Ctrl-C stops all). honcho hands each process PORT = base + 100·i; web comes first, so it gets --port.
run:
	@scripts/prerequisites.sh run
	@$(MAKE) --no-print-directory _run

_run: $(BIN)/.installed
	@scripts/dev_env.sh
	$(SERVICES) && PATH="$(CURDIR)/$(BIN):$$PATH" && \
		$(BIN)/ottrecon migrate && \
		exec $(BIN)/honcho -f Procfile.dev start --port "$${PORT:-8080}"

## test: check the machine (scripts/prerequisites.sh), then format check, lint, type check, and the
## whole suite against real Postgres and Redis, including a release built, installed and run (tests/release)
test:
	@scripts/prerequisites.sh test
	@$(MAKE) --no-print-directory _test

_test: $(BIN)/.installed check
	$(SERVICES) && $(BIN)/pytest

check: $(BIN)/.installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy scripts/*.py scripts/demo_parts
	$(BIN)/lint-imports

## unit: only the pure tests (no services needed)
unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## soak: the long runs of what `make test` runs briefly (about 22 minutes): the fuzzers of tests/fuzz ~100x
## longer (docs/SECURITY.md), then the model-based reconciliation tests with many more histories
## (docs/RECONCILIATION.md), concurrent reconcilers against the model, 1000 rounds of concurrently settled refunds, and 4 minutes of concurrent writers against the change queue; OTTRECON_SOAK_SCALE=2 doubles the counts
SOAK_SCALE = $${OTTRECON_SOAK_SCALE:-1}
soak: $(BIN)/.installed
	$(SERVICES) && OTTRECON_FUZZ=soak $(BIN)/pytest tests/fuzz --timeout=7200
	$(SERVICES) && \
		OTTRECON_MODEL_EXAMPLES=$$((1000 * $(SOAK_SCALE))) OTTRECON_MODEL_STEPS=60 \
		OTTRECON_RACE_EXAMPLES=$$((600 * $(SOAK_SCALE))) OTTRECON_RACE_STEPS=50 \
		OTTRECON_PARSER_EXAMPLES=$$((20000 * $(SOAK_SCALE))) OTTRECON_REFUND_RACE_ROUNDS=$$((1000 * $(SOAK_SCALE))) \
		OTTRECON_CONC_EXAMPLES=$$((500 * $(SOAK_SCALE))) OTTRECON_CONC_STEPS=30 \
		OTTRECON_QUEUE_STRESS_SECONDS=$$((240 * $(SOAK_SCALE))) OTTRECON_QUEUE_STRESS_FUZZ=$$((300 * $(SOAK_SCALE))) \
		OTTRECON_IMPORT_STRESS_ROUNDS=$$((400 * $(SOAK_SCALE))) \
		OTTRECON_PAYMENT_FAULTS_ROUNDS=$$((60 * $(SOAK_SCALE))) OTTRECON_REFUND_FAULTS_ROUNDS=$$((60 * $(SOAK_SCALE))) \
		$(BIN)/pytest -s -q --timeout=7200 tests/integration/test_reconciliation_model.py \
			tests/integration/test_reconciler_race.py tests/integration/test_finish_time_sql.py \
			tests/integration/test_refund_settlement_race.py tests/integration/test_reconcile_concurrency.py \
			tests/integration/test_change_queue_stress.py tests/integration/test_statement_import_stress_independent.py \
			tests/integration/test_payment_submission_faults_independent.py tests/integration/test_refund_faults_independent.py

## demo: the whole system against the simulator with faults on; prints paid / recovered / unpaid / charged twice
demo: $(BIN)/.installed
	$(SERVICES) && $(BIN)/python scripts/demo.py

## bench: receiver and worker throughput, reconciliation and ledger export at 100k and 1M orders (see docs/BENCHMARKS.md)
bench: $(BIN)/.installed
	$(SERVICES) && $(BIN)/python -m bench.run_all

## chaos: fault injection on a Postgres and Redis of its own (kills, restarts, malformed storm); see docs/RELIABILITY.md
chaos: $(BIN)/.installed
	$(BIN)/python -m tests.chaos.run

## clean-data: stop and delete the throwaway Postgres/Redis under .data (if any were started)
clean-data:
	scripts/local_services.sh stop
	rm -rf .data
