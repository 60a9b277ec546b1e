#!/usr/bin/env bash
# The one prepared GPU run for kdlens's KD losses (see benches/gpu/README.md). Run from the repository root:
#   bash benches/gpu/run_gpu.sh            # results under $OUT (or benches/results/gpu-<utc>)
# Installs nothing from a network: a liger-kernel wheel carried in benches/gpu/wheels/ (or $WHEELS) is
# installed with --no-index --no-deps if present; without it the Liger rows are skipped.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR="${OUT:-benches/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT_DIR"
WHEELS="${WHEELS:-benches/gpu/wheels}"
if ! python -c "import liger_kernel" 2>/dev/null; then
  if ls "$WHEELS"/liger_kernel-*.whl >/dev/null 2>&1; then
    python -m pip install --no-index --no-deps "$WHEELS"/liger_kernel-*.whl >"$OUT_DIR/pip_liger.log" 2>&1 \
      || echo "liger-kernel wheel did not install: Liger rows skipped" | tee -a "$OUT_DIR/notes.txt"
  else
    echo "no liger-kernel wheel in $WHEELS: Liger rows skipped" | tee -a "$OUT_DIR/notes.txt"
  fi
fi
# kdlens from the source tree (the losses need no Rust extension); fixed inductor cache
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-/tmp/kdlens-inductor-cache}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >"$OUT_DIR/gpu.txt" 2>&1 || true
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >>"$OUT_DIR/gpu.txt" 2>&1
timeout 470 python benches/gpu/bench_losses_gpu.py --out "$OUT_DIR" --budget-s "${BUDGET_S:-380}" "$@" \
  2>&1 | tee "$OUT_DIR/log.txt"
echo "results in $OUT_DIR"
