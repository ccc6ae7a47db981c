# Everything the project does goes through here. Each target installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
TOOLS := .tools
ANVIL := $(TOOLS)/node_modules/.bin/anvil

.PHONY: install tools test lint typecheck pytest demo bench bench-quick bench-compare bench-observe readme clean \
	image image-tools image-test

# What the product needs (make demo), then the test and lint tools on top (make install/test).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

# Test-only servers and checkers: a local Tempo chain (anvil from npm); from Debian redis-server,
# prometheus and promtool (the metrics tests), nginx (two proxies balanced in the limit tests;
# in front in the deploy guides), caddy (TLS in
# front) and systemd-analyze (the unit).
$(ANVIL):
	mkdir -p $(TOOLS)
	cd $(TOOLS) && npm install --silent --no-audit --no-fund @foundry-rs/anvil@1.7.1

TEST_TOOLS := redis-server:redis-server prometheus:prometheus promtool:prometheus nginx:nginx caddy:caddy systemd-analyze:systemd

tools: $(ANVIL)
	@for pair in $(TEST_TOOLS); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

lint: $(DEV_STAMP)
	$(BIN)/ruff check mpp_proxy tests benchmarks image examples
	$(BIN)/ruff format --check mpp_proxy tests benchmarks image examples

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

pytest: $(DEV_STAMP) tools
	PATH=$(abspath $(TOOLS))/node_modules/.bin:$$PATH $(BIN)/pytest -q

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/mpp-proxy demo

# Benchmarks: peers (aiohttp, Starlette+httpx), matplotlib and py-spy from the bench extra;
# benchmarks.run installs wrk, nginx and redis-server from Debian itself when they are missing.
# One step alone: .venv/bin/python -m benchmarks.run --only NAME[,NAME] [--targets ...].
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(DEV_STAMP) pyproject.toml
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

# What metrics and the JSON access log cost per request: instructions under callgrind (in
# process, then the whole server under granian), then granian side by side (base: the commit observability started from).
OBSERVE_BASE ?= 2f0c4d3
bench-observe: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.observe_cost --callgrind --base $(OBSERVE_BASE)
	$(BIN)/python -m benchmarks.observe_cost --served
	$(BIN)/python -m benchmarks.compare --observe --base $(OBSERVE_BASE)

# The container image, built and run without a daemon or a registry: podman and buildah from
# Debian; the Dockerfile's base image is made locally with debootstrap when it is not there.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= mpp-proxy:$(VERSION)
IMAGE_TOOLS := podman buildah debootstrap runc

image-tools:
	@for tool in $(IMAGE_TOOLS); do command -v $$tool >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(IMAGE_TOOLS) >/dev/null; fi

image: image-tools
	image/build.sh $(IMAGE)

image-test: image $(STAMP)
	IMAGE=$(IMAGE) $(BIN)/pytest -q -p no:cacheprovider image

# README.md is assembled from docs/readme/*.md and the latest benchmark table.
readme:
	$(PY) docs/assemble_readme.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
