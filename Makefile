# Everything a fresh machine with Python 3.11+, make and git needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint browser nginx node bench chaos fuzz openapi clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Start Tokenwire: embedded Valkey, a worker, an edge and the demo page.
run: $(STAMP)
	$(BIN)/tokenwire dev --host $${HOST:-127.0.0.1} --port $${PORT:-8080}

## Lint, then the whole test suite (what CI runs).
test: lint browser nginx node
	$(BIN)/python -m pytest

## Chromium for the browser test, from Debian's packages (as root, as on CI).
## Elsewhere without Chromium that one test is skipped, and says so.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found: the browser test will be skipped"; fi; }

## nginx for the test that runs deploy/nginx.conf in front of two edges (Debian's
## package, as root); it runs unprivileged on a loopback port, never as a service.
## Elsewhere without nginx those tests are skipped, and say so.
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nginx (apt-get)"; \
	    apt-get update -qq >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	  else echo "nginx not found: the nginx tests will be skipped"; fi; }

## The AI SDK (ai 7 and 6) and Node 22 for its tests, exactly as tests/node's lockfile
## pins them. Without npm the Node tests are skipped, and say so.
node: tests/node/node_modules/.installed
tests/node/node_modules/.installed: tests/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd tests/node && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the AI SDK tests will be skipped"; fi

## ruff, and mypy --strict over the package, the tests and the benchmark.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared services tests bench

## The benchmark: Tokenwire's edge vs a raw broadcaster and a naive edge (~6 min).
## BENCH_ARGS=--quick for a scaled-down run. Writes bench/results/<date>.{json,md,png}.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## The full fault matrix (every scenario of issue #4, about 5 min): kills,
## pauses and restarts real processes on 127.0.0.1; exits non-zero on any
## violation. make test runs the fast scenarios. CHAOS_ARGS=--only NAME ...
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

## The OpenAPI fuzz test, longer than in make test (1000 examples per operation,
## a few minutes). FUZZ_EXAMPLES=N for another number.
fuzz: $(STAMP)
	TOKENWIRE_FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} $(BIN)/python -m pytest \
	    tests/e2e/test_openapi_fuzz.py

## Rewrite the generated body schemas of services/tokenwire/edge/static/openapi.json
## from the pydantic models (after changing one; a test fails until you do).
openapi: $(STAMP)
	$(BIN)/python -m tokenwire.edge.openapi

clean:
	rm -rf $(VENV) build *.egg-info tests/node/node_modules
