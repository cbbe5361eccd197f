# promptgate: `make dev` serves on http://127.0.0.1:8000, `make test` runs every check.
# Both create .venv with Python 3.12 (see .python-version) on first use.

PYTHON ?= $(shell command -v python3.12 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: dev test lint format clean bench bench-cold screenshots soak key

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 12))' || \
		{ echo "promptgate needs Python 3.12 or newer (found: $$($(PYTHON) --version 2>&1))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(STAMP)

dev: $(STAMP)  ## Serve on 127.0.0.1:8000 (offline stand-in upstream when HF_TOKEN is unset)
	$(BIN)/python -m lib.devserver

test: $(STAMP) lint  ## Lint, then the whole test suite
	$(BIN)/python -m pytest

bench: $(STAMP)  ## Measure what the proxy adds over nginx and a bare forwarder (bench/results.md)
	@command -v wrk >/dev/null && { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null || \
		{ echo "make bench needs nginx and wrk: apt-get install -y nginx-light wrk (.ci/run does)"; exit 1; }
	@command -v redis-server >/dev/null || test -x /usr/bin/redis-server || \
		{ echo "make bench needs redis-server: apt-get install -y redis-server (.ci/run does)"; exit 1; }
	$(BIN)/python -m bench.run

screenshots: $(STAMP)  ## Refresh docs/screenshot-*.png from the browser tests (CI=true: fail without Chromium)
	CI=true SCREENSHOT_DIR=docs $(BIN)/python -m pytest -q tests/test_pages_browser.py tests/test_usage_browser.py

bench-cold: $(STAMP)  ## Cold start of api.index against a bare FastAPI app (bench/cold_start.md)
	$(BIN)/python -m bench.cold_start

soak: $(STAMP)  ## Thousands of mixed requests on loopback; fails if the proxy's RSS or fds grow (docs/soak.md)
	$(BIN)/python -m scripts.soak $(SOAK_ARGS)

key: $(STAMP)  ## Create a client key: make key NAME=mobile-app (prints it once, and its TOML stanza)
	@test -n "$(NAME)" || { echo "usage: make key NAME=mobile-app"; exit 2; }
	@$(BIN)/python -m lib.keys new "$(NAME)"

lint: $(STAMP)  ## ruff, and the import rules of lib/ (.importlinter, docs/architecture.md)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache
