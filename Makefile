# The two commands of the README:
#   make run   - set up everything on a fresh machine and run the whole platform
#   make test  - install test tools (and Debian's Chromium if missing), lint, run every test
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-postgres lint install install-dev chromium clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamp files: reinstall only when a requirements file changes.
$(VENV)/.installed: $(VENV)/bin/python requirements.txt
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(PY) -m chatplatform.run

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install-dev chromium lint
	$(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-postgres

# The database-facing tests again on PostgreSQL, where one answers on 127.0.0.1:5432 (the CI
# machine has one; a laptop may not, and then this pass says so and is skipped).
PG_URL ?= postgres://postgres@127.0.0.1:5432/chatplatform
test-postgres: install-dev
	@if $(PY) -c "import psycopg; psycopg.connect('postgresql://postgres@127.0.0.1:5432/postgres', connect_timeout=2).close()" 2>/dev/null; then \
	  DATABASE_URL=$(PG_URL) $(VENV)/bin/pytest -p no:cacheprovider -m "not browser and not slow" tests/foundation tests/dashboards; \
	else echo "PostgreSQL not reachable on 127.0.0.1:5432: PostgreSQL pass skipped"; fi

clean:
	rm -rf $(VENV) var
