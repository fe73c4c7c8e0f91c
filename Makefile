# Two commands do all set-up: `make test` and `make demo`. Each creates .venv when
# it is missing and installs the project with the pinned constraints (idempotent).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.convexrecon-installed

.PHONY: test test-all demo bench bench-deps clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu"

demo: $(STAMP)
	$(VENV)/bin/convexrecon demo

# Peers for the benchmarks that are not runtime dependencies. pyscnn is installed
# without its dependencies (it would pull torchvision and a CUDA torch).
bench-deps: $(STAMP)
	$(PY) -m pip install -q --no-deps pyscnn==0.0.10 linalg_backends==0.0.1b0 opt_einsum==3.4.0

bench: bench-deps
	$(PY) benchmarks/operators.py
	$(PY) benchmarks/classical.py
	$(PY) benchmarks/convex_relu.py

clean:
	rm -rf $(VENV) build dist *.egg-info
