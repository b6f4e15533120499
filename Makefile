# ottrecon developer commands. `make run` and `make test` are the two that matter.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Find or start Postgres and Redis (scripts/local_services.sh); fail loudly if it cannot.
SERVICES = services="$$(scripts/local_services.sh env)" && eval "$$services"

.PHONY: run test check format unit soak demo bench clean-data

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ottrecon needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## run: install, migrate, and run receiver, worker, api and the gateway simulator in the foreground
## (Ctrl-C stops all). honcho hands each process PORT = base + 100·i; web comes first, so it gets --port.
run: $(BIN)/.installed
	@scripts/dev_env.sh
	$(SERVICES) && PATH="$(CURDIR)/$(BIN):$$PATH" && \
		$(BIN)/ottrecon migrate && \
		exec $(BIN)/honcho -f Procfile.dev start --port "$${PORT:-8080}"

## test: format check, lint, type check, then the whole suite against real Postgres and Redis
test: $(BIN)/.installed check
	$(SERVICES) && $(BIN)/pytest

check: $(BIN)/.installed
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

## unit: only the pure tests (no services needed)
unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## soak: the model-based reconciliation tests with many more histories than `make test` runs
## (figures in docs/RECONCILIATION.md); OTTRECON_SOAK_SCALE=2 doubles every count
SOAK_SCALE = $${OTTRECON_SOAK_SCALE:-1}
soak: $(BIN)/.installed
	$(SERVICES) && \
		OTTRECON_MODEL_EXAMPLES=$$((1000 * $(SOAK_SCALE))) OTTRECON_MODEL_STEPS=60 \
		OTTRECON_RACE_EXAMPLES=$$((600 * $(SOAK_SCALE))) OTTRECON_RACE_STEPS=50 \
		OTTRECON_PARSER_EXAMPLES=$$((20000 * $(SOAK_SCALE))) \
		$(BIN)/pytest -s -q tests/integration/test_reconciliation_model.py tests/integration/test_reconciler_race.py \
			tests/integration/test_finish_time_sql.py

## demo: the whole system against the simulator with faults on; prints paid / recovered / unpaid / charged twice
demo: $(BIN)/.installed
	$(SERVICES) && $(BIN)/python scripts/demo.py

## bench: receiver and worker throughput (see docs/BENCHMARKS.md)
bench: $(BIN)/.installed
	$(SERVICES) && $(BIN)/python -m bench.run_all

## clean-data: stop and delete the throwaway Postgres/Redis under .data (if any were started)
clean-data:
	scripts/local_services.sh stop
	rm -rf .data
