# Fresh-machine entry points. `make main` trains the canonical run and writes its
# report; `make test` runs the test suite. Both create .venv on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RUN ?= checkpoints/canonical

.PHONY: setup main test bench clean-venv cuda-wheels

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned first because any other torch request pulls the multi-GB CUDA wheels.
# `make main` needs the package alone; `make test` adds pytest, ruff and Ray (the `test` extra),
# which would cost the main job ~15 s of installing on a fresh machine.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

main: setup
	$(BIN)/interp train --preset canonical --out $(RUN) --resume-if-exists
	$(BIN)/interp analyze $(RUN)
	$(BIN)/interp report $(RUN) -o $(RUN)/report.html

# pytest exits 5 when it collects nothing; that must fail CI rather than pass silently,
# so no special-casing: an empty suite is an error here.
test: $(VENV)/.installed-test
	$(BIN)/ruff check interp tests analyses
	$(BIN)/ruff format --check interp tests analyses
	$(BIN)/python -m pytest tests

bench: setup
	$(BIN)/python tests/benchmarks/train_step.py
	$(BIN)/python tests/benchmarks/analyze.py

# The packages a lent GPU machine's image lacks (Python 3.12 there), for tests/benchmarks/cuda_check.sh;
# datasets below 5 because the image's huggingface-hub is 1.x.
cuda-wheels: setup
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl transformer-lens==4.3.0 "datasets<5" dill==0.4.1 multiprocess==0.70.19 plotly powerlaw
