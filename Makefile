# Two entry points: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TYPECHECK_DIR := build/typecheck

.PHONY: demo test lint typecheck unit bench venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[eval,dev]'
	@touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(MAKE) --no-print-directory typecheck

# mypy cannot follow setuptools' editable finder for the core/ -> loradeck.core mapping,
# so it checks a tree of symlinks laid out the way the wheel installs.
typecheck: venv
	@rm -rf $(TYPECHECK_DIR) && mkdir -p $(TYPECHECK_DIR)/loradeck
	@cp -rs $(CURDIR)/core $(TYPECHECK_DIR)/loradeck/core
	@cp -rs $(CURDIR)/tui $(TYPECHECK_DIR)/loradeck/tui
	cd $(TYPECHECK_DIR) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p loradeck.core -p loradeck.tui

unit: venv
	$(VENV)/bin/pytest -q -p no:cacheprovider

test: lint unit

demo: venv
	$(VENV)/bin/loradeck demo

bench: venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build dist *.egg-info $(TYPECHECK_DIR)
