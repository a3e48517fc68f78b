# The two commands of the README: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
# Where pip finds torch. Empty: pip's configured index (here, local CPU wheels; on a stock PyPI for Linux that is the
# multi-GB CUDA build). For the CPU-only wheels on a stock index: make TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: install demo test test-fast test-slow faults lint typecheck check clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The pinned torch first: a bare `torch` requirement would pull the newest build (CUDA on a stock index).
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# (setuptools' notice that an editable install reads this checkout is expected here: not shown)
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# The whole suite in one run: the fast tier and the slow tier (real multi-process runs, kills, long end-to-end flows).
test: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# Kills, a PostgreSQL outage, a full disk, a read-only data dir, damaged shards, a truncated log and a swapped image,
# against real processes and a throw-away PostgreSQL cluster (initdb/pg_ctl); prints scenario / expected / observed.
faults: $(STAMP)
	$(BIN)/python scripts/fault_suite.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/cli_reference.py --check

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck

clean-demo:
	rm -rf .demo
