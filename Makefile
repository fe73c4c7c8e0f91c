# Two commands do all set-up: `make test` and `make demo`. Each creates .venv when
# it is missing and installs the project with the pinned constraints (idempotent).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.convexrecon-installed

.PHONY: test test-all test-matrix demo bench bench-deps clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu"

# The suite under every rounding setting that CI machines differ by (Intel/AMD kernels,
# MKL reproducibility modes, 1 or 2 threads); lists the settings that failed.
# PYTEST_ARGS narrows it, e.g. `make test-matrix PYTEST_ARGS="tests/test_cg.py -x"`.
test-matrix: $(STAMP)
	@failed=""; for cbwr in unset COMPATIBLE AVX2; do for cap in default avx2; do for thr in 1 2; do \
	  echo "== MKL_CBWR=$$cbwr ATEN_CPU_CAPABILITY=$$cap OMP_NUM_THREADS=$$thr"; \
	  if [ $$cbwr = unset ]; then unset MKL_CBWR; else export MKL_CBWR=$$cbwr; fi; \
	  ATEN_CPU_CAPABILITY=$$cap OMP_NUM_THREADS=$$thr $(PY) -m pytest -q $(PYTEST_ARGS) \
	    || failed="$$failed [MKL_CBWR=$$cbwr ATEN_CPU_CAPABILITY=$$cap OMP_NUM_THREADS=$$thr]"; \
	done; done; done; \
	if [ -n "$$failed" ]; then echo "test-matrix failed under:$$failed"; exit 1; fi; \
	echo "test-matrix: passed under all 12 settings"

demo: $(STAMP)
	$(VENV)/bin/convexrecon demo
	$(VENV)/bin/convexrecon train-layerwise --preset tiny --out convexrecon-demo/layerwise --resume

# Peers for the benchmarks that are not runtime dependencies. pyscnn is installed
# without its dependencies (it would pull torchvision and a CUDA torch). BART
# (benchmarks/classical.py, quality.py --peers) is the Debian package `bart` (needs root).
bench-deps: $(STAMP)
	$(PY) -m pip install -q --no-deps pyscnn==0.0.10 linalg_backends==0.0.1b0 opt_einsum==3.4.0
	command -v bart >/dev/null 2>&1 || { apt-get update && apt-get install -y bart; } \
		|| echo "bench-deps: could not install bart (apt-get install bart as root); BART rows are skipped"

bench: bench-deps
	$(PY) benchmarks/operators.py
	$(PY) benchmarks/classical.py
	$(PY) benchmarks/convex_relu.py

clean:
	rm -rf $(VENV) build dist *.egg-info
