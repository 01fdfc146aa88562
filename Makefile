# Two commands on a fresh machine: `make demo` and `make test`.  Both create the virtualenv.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration dev bench clean lock lock-check

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
	deploy/dev/ensure-node-example
	$(BIN)/feedbackflow schemas --check
	$(BIN)/feedbackflow dashboards --check
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	deploy/dev/ensure-prometheus
	deploy/dev/ensure-node-example
	$(BIN)/python -m pytest tests/integration tests/faults

bench: $(STAMP)
	$(BIN)/python -m bench.run

# The image's dependencies (deploy/requirements.lock): pip-compile from pyproject.toml's server
# extra, hashed.  From PyPI alone: PIP_CONFIG_FILE=/dev/null drops a machine's own indexes and
# constraints.  pip-compile keeps the pins it finds, so `lock` changes only what pyproject.toml
# asks for, and `lock-check` (a dry run) fails when the lock is not what `lock` would write.
LOCK_COMPILE = env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --strip-extras \
	--generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --extra server \
	--output-file deploy/requirements.lock pyproject.toml

lock: $(STAMP)
	$(LOCK_COMPILE)

lock-check: $(STAMP)
	$(LOCK_COMPILE) --dry-run 2>&1 | diff deploy/requirements.lock - \
	  || { echo "deploy/requirements.lock is not current: run make lock" >&2; exit 1; }

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .feedbackflow
