# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use: with uv when it is
# on the PATH (the same packages; its set-up took half of pip's time on a fresh clone, README "Install"), else with
# pip. `make UV= demo` uses pip even where uv is installed (uv does not read pip's configuration files).
PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-all test-browser browser bench lint clean

$(STAMP): pyproject.toml
ifneq ($(UV),)
	$(UV) venv --allow-existing --seed --python $(PYTHON) $(VENV)
	$(UV) pip install --python $(BIN)/python -e ".[dev]"
else
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
endif
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/pespot demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "slow or not slow"

# The browser tests (`pespot review` in a real headless Chromium) need Debian's chromium package; Playwright's
# Python package (a dev dependency) drives it and never downloads a browser of its own.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }
	@chromium --version 2>/dev/null

test-browser: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m browser

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
