# The two commands from the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-slow test-polyglot lint bench clean schemas

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,fast]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/natsflow serve --deploy manifests/examples --python-module natsflow.actors.examples

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The fast, honest subset: unit + integration against a real nats-server.
test: lint
	$(BIN)/pytest -m "not slow and not polyglot" -q

# The slow runs: kill -9 of the service, and restarts of nats-server, at random moments (about 3 minutes).
test-slow: $(STAMP)
	$(BIN)/pytest -m slow -q

# The example workers in other languages (examples/workers/) against a real nats-server:
# installs the Node.js worker's npm packages (npm ci), and Go with Debian's nats.go when
# missing (apt-get, as root; the Go worker builds offline against them, GOPATH mode).
GO_DEBS := golang-go golang-github-nats-io-go-nats-dev
test-polyglot: $(STAMP)
	npm ci --prefix examples/workers/node --no-audit --no-fund
	@if ! command -v go >/dev/null || ! test -d /usr/share/gocode/src/github.com/nats-io/nats.go; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q $(GO_DEBS); \
		else echo "the Go worker needs: sudo apt-get install $(GO_DEBS)"; exit 1; fi; \
	fi
	$(BIN)/pytest -m polyglot -q

# The message JSON Schemas shipped in natsflow/service/schemas, generated from the structs.
schemas: $(STAMP)
	$(BIN)/python -m natsflow.service.contract --write

# Benchmarks (minutes; not part of make test). compare.py and triggers.py run the
# raw reference from ../shared/bench beside natsflow in the same session.
bench: $(STAMP)
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/compare.py --fsync
	$(BIN)/python bench/triggers.py
	$(BIN)/python bench/triggers.py --fsync
	$(BIN)/python bench/crash.py --fsync
	$(BIN)/python bench/nats_restart.py --fsync
	$(BIN)/python bench/resume.py
	$(BIN)/python bench/loop.py --events 100000

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache data
