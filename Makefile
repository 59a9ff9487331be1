# Two commands for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY ?= demo_study
PROFILE ?= demo

.PHONY: install demo test ui lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# CPU torch first when none is present: a bare `torch` requirement pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,dicom,deepdefacer,deploy]"
	$(BIN)/pip install --quiet --no-deps deepdefacer==2.1.2
	touch $@

install: $(VENV)/.installed

# The venv's programs go first on PATH, so defacers.yaml stanzas can call installed command-line tools.
RUN := PATH="$(abspath $(BIN)):$$PATH"

demo: install
	$(RUN) $(BIN)/defacing-assets demo --study $(STUDY) --profile $(PROFILE)

# Two pytest workers, a test file each at a time (module fixtures are built once).
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check defacing_assets defacing_assets_tests benchmarks

ui: install
	mkdir -p $(STUDY)/dagster_home
	DAGSTER_HOME=$(abspath $(STUDY))/dagster_home \
	DEFACING_DATA=$(STUDY)/data DEFACING_STORAGE=$(STUDY)/store DEFACING_PROFILE=$(PROFILE) \
	$(RUN) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf $(STUDY) .defacing_store
