# Everything the project does goes through here. Each target installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS := .tools
ANVIL := $(TOOLS)/node_modules/.bin/anvil

.PHONY: install tools test lint typecheck pytest demo bench bench-quick bench-compare readme clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Test-only servers: a local Tempo chain (anvil from npm), redis-server and nginx (Debian; the
# limit tests balance two proxies with it).
$(ANVIL):
	mkdir -p $(TOOLS)
	cd $(TOOLS) && npm install --silent --no-audit --no-fund @foundry-rs/anvil@1.7.1

tools: $(ANVIL)
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)
	@command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx >/dev/null)

lint: $(STAMP)
	$(BIN)/ruff check mpp_proxy tests benchmarks
	$(BIN)/ruff format --check mpp_proxy tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) tools
	PATH=$(abspath $(TOOLS))/node_modules/.bin:$$PATH $(BIN)/pytest -q

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/mpp-proxy demo

# Benchmarks: peers (aiohttp, Starlette+httpx), matplotlib and py-spy from the bench extra;
# benchmarks.run installs wrk and nginx from Debian itself when they are missing.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run --full

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run --quick

# This checkout's mpp-proxy beside another commit's (BASE=HEAD~1 in a clean checkout).
BASE ?= HEAD
bench-compare: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.compare --base $(BASE)

# README.md is assembled from docs/readme/*.md and the latest benchmark table.
readme:
	$(PY) docs/assemble_readme.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
