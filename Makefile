# fleetwatch — `make run` (the whole system on this machine) and `make test` (the whole suite).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NAME ?=

.PHONY: run test bench schemas lint clean system-deps system-deps-test venv ui

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Machine packages the stack and the tests use (Debian names). Installed only when missing and root.
system-deps:
	@bash infra/scripts/system-deps.sh run

system-deps-test:
	@bash infra/scripts/system-deps.sh test

# The web UI (ui/): npm ci from the lock file, then a Vite build into ui/dist (served by the
# gateway at /); each step reruns only when its inputs changed.
UI_SRC := $(wildcard ui/src/*.ts ui/src/*.css ui/src/pages/*.ts) ui/index.html ui/vite.config.ts ui/tsconfig.json
ui/node_modules/.installed: ui/package.json ui/package-lock.json
	# npm ci refuses a lock written by an npm that left other platforms' optional packages out;
	# install --no-save then installs the same locked versions without touching the lock.
	cd ui && (npm ci --no-audit --no-fund --loglevel=error 2>/dev/null || npm install --no-save --no-audit --no-fund --loglevel=error)
	touch $@

ui/dist/index.html: ui/node_modules/.installed $(UI_SRC)
	cd ui && npm run --silent build

ui: ui/dist/index.html

run: $(STAMP) system-deps ui
	$(BIN)/fleetwatch dev

test: $(STAMP) system-deps-test ui
	$(BIN)/python -m pytest -p no:cacheprovider -q -ra $(PYTEST_ARGS)

bench: $(STAMP) system-deps-test ui
	$(BIN)/python -m bench $(NAME)

schemas: $(STAMP)
	$(BIN)/python -m libs.schemas.registry docs/schemas

lint: $(STAMP)
	$(BIN)/python -m compileall -q libs services fleetwatch tests bench

clean:
	rm -rf $(VENV) .fleetwatch
