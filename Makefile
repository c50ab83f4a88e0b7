# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv run test lint bench clean

venv: $(STAMP)

# Re-installs only when pyproject.toml changed; otherwise a no-op. Under a lock, so that two `make test`
# started at once in one clone install once (the second finds the stamp fresh and does nothing).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required; found " + sys.version.split()[0])'
	@mkdir -p $(VENV)
	@exec 9>$(VENV)/.lock; flock 9; \
	if [ $(STAMP) -nt pyproject.toml ]; then exit 0; fi; \
	set -e; echo "installing the environment in $(VENV) (pip install -e '.[dev]')"; \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install --quiet --upgrade pip; \
	$(PY) -m pip install --quiet -e '.[dev]'; \
	touch $(STAMP)

run: venv
	$(PY) main.py $(ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy

test: venv lint
	$(PY) -m tests.support.postgres ensure
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: venv
	@for name in $$($(PY) -c 'from bench.__main__ import available; print(" ".join(available()))'); do \
		echo "== $$name"; $(PY) -m bench $$name --json || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
