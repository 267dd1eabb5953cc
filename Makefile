# fleetwatch — `make run` (the whole system on this machine) and `make test` (the whole suite).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NAME ?=

.PHONY: run test bench schemas lint clean system-deps venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Machine packages the stack and the tests use (Debian names). Installed only when missing and root.
system-deps:
	@bash infra/scripts/system-deps.sh

run: $(STAMP) system-deps
	$(BIN)/fleetwatch dev

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -p no:cacheprovider -q -ra $(PYTEST_ARGS)

bench: $(STAMP) system-deps
	$(BIN)/python -m bench $(NAME)

schemas: $(STAMP)
	$(BIN)/python -m libs.schemas.registry docs/schemas

lint: $(STAMP)
	$(BIN)/python -m compileall -q libs services fleetwatch tests bench

clean:
	rm -rf $(VENV) .fleetwatch
