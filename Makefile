# Two entry points: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TYPECHECK_DIR := build/typecheck

.PHONY: demo test lint typecheck tree unit bench venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[eval,dev]'
	@touch $(STAMP)

venv: $(STAMP)

# mypy and import-linter cannot follow setuptools' editable finder for the core/ ->
# loradeck.core mapping, so both read a tree of symlinks laid out as the wheel installs.
tree: venv
	@rm -rf $(TYPECHECK_DIR) && mkdir -p $(TYPECHECK_DIR)/loradeck
	@cp -rs $(CURDIR)/core $(TYPECHECK_DIR)/loradeck/core
	@cp -rs $(CURDIR)/tui $(TYPECHECK_DIR)/loradeck/tui

lint: tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=$(TYPECHECK_DIR) $(VENV)/bin/lint-imports
	cd $(TYPECHECK_DIR) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p loradeck.core -p loradeck.tui

typecheck: tree
	cd $(TYPECHECK_DIR) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p loradeck.core -p loradeck.tui

unit: venv
	$(VENV)/bin/pytest -q -p no:cacheprovider

test: lint unit

demo: venv
	$(VENV)/bin/loradeck --home build/demo-home demo

bench: venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build dist *.egg-info $(TYPECHECK_DIR)
