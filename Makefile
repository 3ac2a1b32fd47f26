# The README's two commands: `make demo` and `make test`. Each one creates .venv,
# installs the package and the Debian packages the run needs, then runs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck contracts pytest system-deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

system-deps:
	@scripts/ensure-system-deps.sh redis-server prometheus

demo: $(STAMP) system-deps
	$(VENV)/bin/autoscaler demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check autoscaler tests bench grafana

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict autoscaler

contracts: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP) system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck contracts pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
