# fleetwatch — `make run` (the whole system on this machine) and `make test` (the whole suite).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NAME ?=

.PHONY: run test test-latest bench schemas lint lock clean system-deps system-deps-test venv ui dist

# Installs come from the lock (requirements/*.txt, hashes for every file; `make lock` refreshes
# it from pyproject.toml's ranges). The project itself is installed editable without build
# isolation, so even its build backend is the locked setuptools. INSTALL=latest (what
# `make test-latest` uses) ignores the lock and takes the newest release of everything.
INSTALL ?= locked
LOCK_GROUPS := collector ingest commander replicator alerter gateway authcallout agent cli
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command "make lock"

$(STAMP): pyproject.toml requirements/dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
ifeq ($(INSTALL),latest)
	$(BIN)/pip install -q --upgrade pip setuptools
	$(BIN)/pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
else
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
endif
	touch $(STAMP)

venv: $(STAMP)

# One resolution for everything (dev = every service + tools); each image's and the agent's
# group is compiled constrained by it, so a package has the same version in every install path.
lock: $(STAMP)
	$(UV_COMPILE) --extra dev --upgrade -o requirements/dev.txt
	for g in $(LOCK_GROUPS); do $(UV_COMPILE) --extra $$g -c requirements/dev.txt -o requirements/$$g.txt || exit 1; done

# Machine packages the stack and the tests use (Debian names). Installed only when missing and root.
system-deps:
	@bash infra/scripts/system-deps.sh run

system-deps-test:
	@bash infra/scripts/system-deps.sh test

# The web UI (ui/): npm ci from the lock file, then a Vite build into ui/dist (served by the
# gateway at /); each step reruns only when its inputs changed.
UI_SRC := $(wildcard ui/src/*.ts ui/src/*.css ui/src/pages/*.ts) ui/index.html ui/vite.config.ts ui/tsconfig.json
ui/node_modules/.installed: ui/package.json ui/package-lock.json
	# The lock lists every platform's optional packages (rollup's native builds), so plain
	# npm ci installs exactly the locked versions on any machine.
	cd ui && npm ci --no-audit --no-fund --loglevel=error
	touch $@

ui/dist/index.html: ui/node_modules/.installed $(UI_SRC)
	cd ui && npm run --silent build

ui: ui/dist/index.html

# The UI's lint: ESLint (typescript-eslint, type-aware on src/), prettier --check and tsc.
.PHONY: ui-lint
ui-lint: ui/node_modules/.installed
	cd ui && npm run --silent lint

# sdist and wheel in dist/, the built UI and the agents' lock inside (tools/build_hooks.py). No
# build isolation: the backend is the locked setuptools of the venv, nothing is fetched.
# build/lib is emptied first so that no file deleted from the tree rides along from a past build.
dist: $(STAMP) ui
	rm -rf build/lib dist/fleetwatch-*
	$(BIN)/python -m build --no-isolation --sdist --wheel --outdir dist/

run: $(STAMP) system-deps ui
	$(BIN)/fleetwatch dev

test: $(STAMP) system-deps-test ui
	$(BIN)/python -m pytest -p no:cacheprovider -q -ra $(PYTEST_ARGS)

# The same suite against the newest release of every dependency, in its own venv (the lock's
# early warning: what the next `make lock` would bring).
test-latest:
	$(MAKE) test VENV=.venv-latest INSTALL=latest

bench: $(STAMP) system-deps-test ui
	$(BIN)/python -m bench $(NAME)

schemas: $(STAMP)
	$(BIN)/python -m libs.schemas.registry docs/schemas

# The gates CI runs before the tests: ruff's rules and formatting over the tree, mypy on
# libs/ and services/ (zero errors), the import contracts (tools/import_contracts.py), and the
# UI's ESLint/Prettier/tsc check.
lint: $(STAMP) ui-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m tools.import_contracts

clean:
	rm -rf $(VENV) .venv-latest .fleetwatch
