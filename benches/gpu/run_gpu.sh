#!/usr/bin/env bash
# The one prepared GPU run for kdlens's KD losses (see benches/gpu/README.md). From the repository root:
#   bash benches/gpu/run_gpu.sh            # results under $OUT (or benches/results/gpu-<utc>)
# 1. correctness: tests/losses/test_gpu.py (pytest -m gpu) -> gpu_tests.xml, verdict PASS/FAIL;
# 2. timings: bench_losses_gpu.py -> losses_gpu.csv + rows.jsonl, every row carrying the verdict.
# Installs nothing from a network: wheels carried in benches/gpu/wheels/ (liger-kernel==0.8.5) are
# installed with --no-index --no-deps into a temporary folder put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-benches/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT_DIR"
WHEELS="${WHEELS:-benches/gpu/wheels}"
SITE="$(mktemp -d)"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl \
    >"$OUT_DIR/pip.log" 2>&1 || echo "carried wheels did not install (see pip.log)" | tee -a "$OUT_DIR/notes.txt"
else
  echo "no wheels in $WHEELS: the Liger rows are skipped" | tee -a "$OUT_DIR/notes.txt"
fi
export PYTHONPATH="$PWD/python:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/kdlens-inductor-cache}"
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv 2>&1
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" 2>&1; } >"$OUT_DIR/gpu.txt"
verdict=FAIL
if timeout "${TEST_TIMEOUT_S:-150}" "$PY" -m pytest -m gpu tests/losses/test_gpu.py -q -p no:cacheprovider \
     --junitxml="$OUT_DIR/gpu_tests.xml" >"$OUT_DIR/gpu_tests.log" 2>&1; then
  verdict=PASS
fi
echo "correctness: $verdict ($(tail -n 1 "$OUT_DIR/gpu_tests.log"))" | tee -a "$OUT_DIR/notes.txt"
timeout "${BENCH_TIMEOUT_S:-270}" "$PY" benches/gpu/bench_losses_gpu.py --out "$OUT_DIR" --correctness "$verdict" \
  --budget-s "${BUDGET_S:-200}" --profile "$@" 2>&1 | tee "$OUT_DIR/log.txt"
echo "results in $OUT_DIR"
