# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench docs clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/onduty demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	@bash scripts/services.sh
	$(MAKE) --no-print-directory lint typecheck
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/onduty bench

docs: $(STAMP)
	$(BIN)/python scripts/config_reference.py --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache onduty-demo.db*
