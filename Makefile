# The README's two commands: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED ?= $(abspath ../shared)
export LYMPHCAD_SHARED ?= $(SHARED)

.PHONY: demo test lint typecheck check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m lymphcad.demo --out demo-out

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks release
	$(BIN)/ruff format --check src tests benchmarks release

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# the quick benchmarks (about 10 min on a quiet 2-core machine) and the README's table; BENCH=--full for all
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH)

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
