# The two commands from the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,fast]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/natsflow serve --deploy manifests/examples --python-module actors.examples

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The fast, honest subset: unit + integration against a real nats-server.
test: lint
	$(BIN)/pytest -m "not slow" -q

# Crash, soak and long property runs (kill -9, hundreds of restarts).
test-slow: $(STAMP)
	$(BIN)/pytest -m slow -q

bench: $(STAMP)
	$(BIN)/python bench/steps.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/resume.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache data
