# Two commands on a fresh machine: `make demo` and `make test`.  Both create the virtualenv.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration dev bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[server,embedded,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/feedbackflow demo

dev: $(STAMP)
	$(BIN)/feedbackflow dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	deploy/dev/ensure-prometheus
	$(BIN)/feedbackflow schemas --check
	$(BIN)/feedbackflow dashboards --check
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	deploy/dev/ensure-prometheus
	$(BIN)/python -m pytest tests/integration tests/faults

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .feedbackflow
