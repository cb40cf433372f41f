# fastdistill: `make demo` runs the whole pipeline offline; `make test` runs the tests.
PYTHON ?= python3
DEV_PORT ?= 3000
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export FASTDISTILL_ARTIFACTS := $(CURDIR)/artifacts
export FASTDISTILL_CONFIGS := $(CURDIR)/configs

.PHONY: demo test lint dev bench bench-scale venv clean

venv: $(VENV)/.installed

# Core + pytest: everything the demo needs (no PyTorch).
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "fastdistill needs Python >= 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# The `train` extra (torch==2.13.0 CPU, transformers, peft) so the hf-sft tests run too.
$(VENV)/.installed-train: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test,train]"
	touch $@

demo: venv
	$(BIN)/fastdistill demo

test: $(VENV)/.installed-train
	$(BIN)/python -m pytest

# ruff (lint and import order) over the package, tests and benchmarks; mypy (pyproject's settings).
lint: venv
	$(BIN)/ruff check fastdistill_assets fastdistill_assets_tests benchmarks
	$(BIN)/mypy

dev: venv
	$(BIN)/python -c 'from fastdistill_assets.runtime.instance import dagster_home; dagster_home()'
	$(BIN)/dagster dev -w workspace.yaml -p $(DEV_PORT)

bench: venv
	$(BIN)/python benchmarks/teacher_throughput.py
	$(BIN)/python benchmarks/gates_throughput.py
	$(BIN)/python benchmarks/gold_free_precision.py
	$(BIN)/python benchmarks/official_wikisql.py
	$(BIN)/python benchmarks/storage_stress.py
	$(BIN)/python benchmarks/teacher_error_profile.py
	$(BIN)/python benchmarks/eval_throughput.py
	$(BIN)/python benchmarks/cli_overhead.py
	$(BIN)/python benchmarks/manifest_hash.py

# Long (tens of minutes): 200,000 questions raw → distilled with 1, 2 and 4 shards, then a million.
bench-scale: venv
	$(BIN)/python benchmarks/scale.py --max-rss-gib 1
	$(BIN)/python benchmarks/scale.py --million --shards 1 --max-rss-gib 2

clean:
	rm -rf $(VENV) artifacts .dagster_home
