# `make demo` and `make test` create the virtualenv when it is missing and reuse it otherwise.
MLFF_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/mlff-plugins/venv
export MLFF_VENV
BIN := $(MLFF_VENV)/bin
DEMO_DIR ?= demo-output
PYTEST_ARGS ?=

.PHONY: env test-tools demo test test-all lint

env:
	@bash scripts/ensure-env

test-tools:
	@bash scripts/ensure-test-tools

demo: env
	$(BIN)/mlff demo -o $(DEMO_DIR)

test: env test-tools
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: env test-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check mlff_core openmm_bridge ase_bridge plugins/lammps/mlff_lammps tests benchmarks
