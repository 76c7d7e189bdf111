# Two entry points for a fresh clone: `make run` (pipeline on the embedded sample) and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# CPU build of torch first, so nothing pulls a CUDA build.
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $(STAMP)

.PHONY: install run test bench ui
install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lvm run

test: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	for b in bench/bench_*.py; do $(VENV)/bin/python $$b || exit 1; done
