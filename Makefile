# The README's two commands: `make demo` and `make test`. Each one creates .venv,
# installs the package with its demo/plot extras (rich, matplotlib: not in the
# controller's image) and the Debian packages the run needs, then runs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck contracts pytest system-deps control-plane venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,demo,plot]'
	touch $(STAMP)

system-deps:
	@scripts/ensure-system-deps.sh redis-server redis-cli openssl prometheus

# The demo needs only redis-server (prometheus is for the tests' dashboards and alerts).
demo: $(STAMP)
	@scripts/ensure-system-deps.sh redis-server
	$(VENV)/bin/autoscaler demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check autoscaler tests bench grafana examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict autoscaler

contracts: $(STAMP)
	$(VENV)/bin/lint-imports

# tests/cluster/ runs against a real kube-apiserver, kube-controller-manager and etcd, built
# from source by scripts/control-plane.sh (cold: ~7 min on 2 cores; warm: instant). Its last
# output line is the bin directory, handed to the tests in QA_CONTROL_PLANE_BIN.
control-plane:
	@scripts/control-plane.sh >/dev/null

pytest: $(STAMP) system-deps control-plane
	QA_CONTROL_PLANE_BIN="$$(scripts/control-plane.sh | tail -n 1)" $(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck contracts pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
