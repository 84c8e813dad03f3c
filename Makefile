# The two commands for a fresh clone:  make serve  and  make test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: serve test install bench schema

# a changed lockfile reinstalls, so an old checkout picks up new Node packages too
NODE_LOCKS := graph/http/graphiql-assets/package-lock.json examples/package-lock.json \
              tests/http-audit/package-lock.json graph/http/admin-assets/package-lock.json

$(BIN)/.installed: pyproject.toml $(NODE_LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# GraphiQL's scripts, served by the API itself (without them the page uses a CDN)
	-command -v npm >/dev/null && npm ci --prefix graph/http/graphiql-assets --no-audit --no-fund --silent
	# the dashboard's charts (uPlot) at /admin, served by the API itself (without them it shows no charts)
	-command -v npm >/dev/null && npm ci --prefix graph/http/admin-assets --no-audit --no-fund --silent
	# the Node example client, which tests/test_examples.py runs
	-command -v npm >/dev/null && npm ci --prefix examples --no-audit --no-fund --silent
	# graphql-http, whose auditServer tests/test_http_spec.py runs (the GraphQL-over-HTTP spec's audit)
	-command -v npm >/dev/null && npm ci --prefix tests/http-audit --no-audit --no-fund --silent
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
