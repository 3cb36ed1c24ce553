# The README's two commands: `make run` (set up + main job) and `make test` (set up + whole test suite).
# Only Python 3.11, node and npm are needed on the machine; everything else lands in .venv/.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PATIENTS ?= 20000
SEED ?= 7
# Pass extra pytest arguments with `make test PYTEST_ARGS="-k lake"`.
PYTEST_ARGS ?=

.PHONY: install lock run test bench clean synth gates checkov browser

# The locks (docs/architecture.md, "Pinned versions"): every package of an environment at one version,
# with its hashes, for CPython 3.11 on manylinux x86_64. DEV_LOCK is this venv (make, CI); STEPS_LOCK is
# what the step and serving containers install (the staged code's and the model artifact's
# requirements.txt, the baked images), resolved within DEV_LOCK so local jobs find every pin installed;
# requirements/checkov-lock.txt is checkov's own venv (below).
DEV_LOCK := requirements/dev-lock.txt
STEPS_LOCK := requirements/steps-lock.txt

# A new venv (in folder $(1)) with pip itself at the version the dev lock names (and its hashes), before
# pip installs the rest.
define new_venv
	$(PYTHON) -m venv $(1)
	sed -n '/^pip==/,/# via/p' $(DEV_LOCK) > $(1)/pip-lock.txt
	$(1)/bin/python -m pip install --quiet --require-hashes -r $(1)/pip-lock.txt
endef

$(BIN)/python:
	$(call new_venv,$(VENV))

# Stamp file: reinstall only when the dependencies change. The lock installs in hash-checking mode (a
# package missing from it, unpinned or with another hash fails the install); the project itself goes on
# top without dependencies and with the locked setuptools as its build backend.
$(VENV)/.installed: setup.py requirements/steps.txt $(DEV_LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

# Re-resolve the locks after a change to setup.py, requirements/steps.txt or requirements/checkov.txt:
# versions still allowed are kept. Upgrade one package with `make lock LOCK_ARGS="--upgrade-package xgboost-cpu"`, all with
# LOCK_ARGS=--upgrade. The CPU build of torch comes from pip's find-links (a wheel on this machine's disk).
LOCK_ARGS ?=
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
lock: install
	$(PIP_COMPILE) --extra dev -o $(DEV_LOCK) setup.py
	$(PIP_COMPILE) -c $(DEV_LOCK) -o $(STEPS_LOCK) requirements/steps.txt
	$(PIP_COMPILE) -o requirements/checkov-lock.txt requirements/checkov.txt


# The main job: data (generated once; raw data is write-once) → curated version → the pipeline definition
# run by the local executor → champion registered and, since this local run approves what passes the
# gate, serving on http://127.0.0.1:$(PORT) (on SageMaker the default is PendingManualApproval).
PORT ?= 8080
run: install
	$(BIN)/diagnosa data generate --patients $(PATIENTS) --seed $(SEED)
	$(BIN)/diagnosa data ingest --batch cohort-n$(PATIENTS)-s$(SEED)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/diagnosa run --local --port $(PORT) --param ModelApprovalStatus=Approved

# The pinned CDK CLI too (node_modules/): a test reads its bootstrap template (tests/infra/test_images.py);
# and checkov's venv: tests/infra/test_template_lint.py runs the checkov gate on the synthesized templates.
# It declares what it installs (tests/tools.py): a test needing the CDK CLI or checkov then fails rather than skips.
# The suite runs in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them, so that a file's
# module fixtures are made once and its tests keep their order; TEST_WORKERS=0 runs it in this process (--pdb).
TEST_WORKERS ?= 2
test: install node_modules/.installed checkov
	DIAGNOSA_TEST_REQUIRES="cdk,checkov$${DIAGNOSA_TEST_REQUIRES:+,$$DIAGNOSA_TEST_REQUIRES}" \
		$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/bench_data.py
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python benchmarks/bench_pipeline.py

# The CDK app's CloudFormation templates into cdk.out/ (offline: no AWS account needed). The CDK CLI is
# pinned in package.json/package-lock.json and installed into ./node_modules; synth fails on any
# unacknowledged cdk-nag finding. Pick stages with `make synth CDK_ARGS="-c stage=dev"`.
CDK_ARGS ?=
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

synth: install node_modules/.installed
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 CDK_DISABLE_CLI_TELEMETRY=true \
		npx --no-install cdk synth --quiet --no-notices --no-version-reporting $(CDK_ARGS)

# checkov in a venv of its own (its pins conflict with the project's boto3), from its lock.
CHECKOV_VENV ?= .venv-checkov
$(CHECKOV_VENV)/.installed: requirements/checkov-lock.txt
	$(call new_venv,$(CHECKOV_VENV))
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --require-hashes -r requirements/checkov-lock.txt
	touch $@

checkov: $(CHECKOV_VENV)/.installed

# The template gates on what `make synth` wrote: cfn-lint and checkov on every template (infra/gates.py);
# any finding not accepted there or in infra/checkov-acknowledged.json fails. The delivery pipeline runs it.
gates: synth checkov
	$(BIN)/python -m infra.gates cdk.out --checkov $(CHECKOV_VENV)/bin/checkov

# Debian's Chromium for the browser tests (tests/test_app_e2e.py, diagnosa/browser.py), which skip without it.
# As root it is installed with apt; otherwise the command to run is printed.
browser:
	@if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; then \
		echo "chromium present: $$(chromium --version 2>/dev/null || /usr/bin/chromium --version)"; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && \
		echo "installed $$(chromium --version)"; \
	else \
		echo "Debian chromium is not installed; run as root: apt-get install chromium"; \
	fi

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .diagnosa .pytest_cache
