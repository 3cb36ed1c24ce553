# The README's two commands: `make run` (set up + main job) and `make test` (set up + whole test suite).
# Only Python 3.11, node and npm are needed on the machine; everything else lands in .venv/.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PATIENTS ?= 20000
SEED ?= 7
# Pass extra pytest arguments with `make test PYTEST_ARGS="-k lake"`.
PYTEST_ARGS ?=

.PHONY: install run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp file: reinstall only when the dependency list changes.
$(VENV)/.installed: setup.py requirements/steps.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/diagnosa data generate --patients $(PATIENTS) --seed $(SEED)
	$(BIN)/diagnosa data ingest --batch cohort-n$(PATIENTS)-s$(SEED)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/bench_data.py

clean:
	rm -rf $(VENV) .diagnosa .pytest_cache
