# The two commands for a fresh clone:  make serve  and  make test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve test install bench schema

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# GraphiQL's scripts, served by the API itself (without them the page uses a CDN)
	-command -v npm >/dev/null && npm ci --prefix graph/http/graphiql-assets --no-audit --no-fund --silent
	# the Node example client, which tests/test_examples.py runs
	-command -v npm >/dev/null && npm ci --prefix examples --no-audit --no-fund --silent
	touch $@

install: $(BIN)/.installed

## the API with a worker inside, embedded Redis, in-memory MongoDB
serve: install
	$(BIN)/python -m graph --dev

## every test
test: install
	$(BIN)/python -m pytest

## regenerate schema.graphql from the code
schema: install
	$(BIN)/python -m graph.export_schema > schema.graphql
