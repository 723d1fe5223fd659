#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, install jtconv with a CUDA
# jaxlib, run the tests that exercise every method and plan on the GPU, and
# time the main suite against torch (CUDA torch when present, else CPU torch).
# Budget: under 8 minutes on one H100/H200-class GPU. Results go to $OUT
# (default benchmarks/gpu_results/), to be committed as benchmarks/RESULTS_gpu.md.
#
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/gpu_results}"
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - start )) s)"; }

step "install"
python3 -m venv /tmp/jtconv-gpu-venv && source /tmp/jtconv-gpu-venv/bin/activate
pip install -q --upgrade pip
pip install -q -e ".[test]" "jax[cuda12]" 2>&1 | tail -3
python -c "import jax; print(jax.devices())" | tee "$OUT/devices.txt"

step "tests on the GPU (plans, methods, gradients, transforms)"
JTCONV_CACHE_DIR="$OUT/cache" timeout 300 python -m pytest -q -x \
  tests/test_plans.py tests/test_measure.py tests/test_gradients.py tests/test_transforms.py \
  2>&1 | tail -15 | tee "$OUT/tests.txt"

step "plans the GPU estimate and measured planning pick"
JTCONV_CACHE_DIR="$OUT/cache" timeout 120 python -m jtconv tune --json \
  --layer "x=16,128,16,16 w=128,64,4,4 stride=2 padding=1" \
  --layer "x=1,32,8,16,16 w=32,16,4,4,4 stride=2 padding=1" \
  --layer "x=2,256,256 w=256,128,16 stride=8 padding=4" > "$OUT/tune.json"

step "benchmark: main suite, auto (estimate) and measure vs torch and the JAX status quo"
JTCONV_CACHE_DIR="$OUT/cache" timeout 240 python benchmarks/run.py --quick --suite main \
  --algorithms auto,reference,xla --planning measure --markdown "$OUT/RESULTS_gpu.md" --json "$OUT/results.json" \
  2>&1 | tail -25 | tee "$OUT/benchmark.txt"

step "done"
