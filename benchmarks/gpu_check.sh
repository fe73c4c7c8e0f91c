#!/usr/bin/env bash
# GPU check, one command from the repository root:  bash benchmarks/gpu_check.sh
#
# 1. creates .venv with the pinned constraints when it is missing (the Makefile's own
#    set-up; pip's default Linux torch wheel carries CUDA);
# 2. runs every gpu-marked test (pytest -m gpu), slow ones included;
# 3. runs benchmarks/gpu_bench.py: the operator and classical benchmarks on CUDA
#    against the CPU in the same run (medians, ratios, a RESULT line).
# A few minutes on one GPU. The log is also written to out/gpu_check.log (out/ is
# git-ignored); copy its figures into docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
make -s VENV="$VENV" "$VENV/.convexrecon-installed"
mkdir -p out
"$PY" - <<'PYEOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"error: no CUDA device visible to torch {torch.__version__} (built for CUDA {torch.version.cuda})")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PYEOF
{
  echo "== gpu-marked tests"
  "$PY" -m pytest -q -m gpu -o addopts="" -p no:cacheprovider tests
  echo "== benchmarks on CUDA (benchmarks/gpu_bench.py)"
  PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu_bench.py --device cuda --threads 1 --repeats 5
} 2>&1 | tee out/gpu_check.log
