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

.PHONY: install run lint test bench
install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lvm run

# ruff (lint and import order) and mypy (strict on lvm_core/), as configured in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# ruff, then mypy beside the tests (its report comes after theirs; either failing fails the target). Three worker
# processes (TEST_WORKERS=1 for one), a test file each: a file's tests share its fixtures. Three on two cores,
# because the system tests spend part of their time waiting on servers and subprocesses.
TEST_WORKERS ?= 3
test: $(STAMP)
	$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy > $(VENV)/mypy-report.txt 2>&1 & types=$$!; \
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile; tests=$$?; \
	wait $$types; typed=$$?; echo "mypy:"; cat $(VENV)/mypy-report.txt; \
	test $$tests -eq 0 && test $$typed -eq 0

bench: $(STAMP)
	for b in bench/bench_*.py; do $(VENV)/bin/python $$b || exit 1; done
