# The two commands of the README. Each does its own set-up (scripts/setup.sh) first.
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup demo test lint paper-plan report

setup:
	bash scripts/setup.sh

## Run the demo workflow end to end (config/config.yaml): results/tables/*.md
demo: setup
	$(BIN)/snakemake --cores $(CORES)

## Run the test suite (offline, CPU, a few minutes): one pytest-xdist worker per core, each
## test module whole on one worker, modules with slow tests first (tests/conftest.py)
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(CORES) --dist loadfile --no-loadscope-reorder

## One HTML report of the demo run (and screenshots when chromium is installed)
report: setup
	bash scripts/report.sh

## Plan every job of the paper's configuration (no downloads, seconds)
paper-plan: setup
	$(BIN)/snakemake -n --configfile config/paper.yaml --quiet rules

lint:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
