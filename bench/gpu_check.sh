#!/usr/bin/env bash
# The whole GPU check of the engine in one run: the GPU tests, then bench/engine.py on a
# random-weight Llama-3.2-1B shape beside transformers, figures written to $OUT.
#
#   bench/gpu_check.sh prepare     here, once: fills .gpu/ (git-ignored) with what a GPU
#                                  machine lacks: the platformdirs wheel (Python 3.12) and
#                                  the bundled model's tokenizer files
#   bench/gpu_check.sh run         there, from the repository root, with .gpu carried:
#                                  writes $OUT/gpu.txt, tests.log, engine-cuda.txt/.json,
#                                  tiles.txt (bench/triton_tiles.py: the attention
#                                  kernel's launch configs beside SDPA) and profile.txt
#                                  (bench/step_profile.py: first requests after start, a
#                                  batch-128 decode step's host and kernel time)
#
# Each step's time limit can be set: TEST_TIMEOUT (240 s), BENCH_TIMEOUT (420 s) with
# REPEATS (3), TILES_TIMEOUT (150 s), PROFILE_TIMEOUT (120 s).
# On a machine whose python3 has PyTorch (CUDA), Triton, transformers, tokenizers,
# safetensors, numpy, xxhash and pytest. A run took 3.5 minutes on one H100 (REPEATS=2,
# before tiles and profile were added).
set -uo pipefail
cd "$(dirname "$0")/.."
GPU=.gpu

prepare() {
  mkdir -p "$GPU/whl" "$GPU/tok"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 -d "$GPU/whl" platformdirs
  .venv/bin/python - "$GPU/tok" <<'EOF'
import shutil, sys
from promptcache.model.loading.loader import resolve_model_path
src = resolve_model_path(None)
for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if (src / name).exists():
        shutil.copy(src / name, sys.argv[1])
EOF
  ls -la "$GPU/whl" "$GPU/tok"
}

run() {
  OUT=${OUT:-/tmp/gpu-check}
  mkdir -p "$OUT"
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$GPU"/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
  export PROMPTCACHE_SHAPE_TOKENIZER=$PWD/$GPU/tok PROMPTCACHE_CACHE_DIR=/tmp/promptcache-cache
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
    | tee -a "$OUT/gpu.txt"
  timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    tests/test_triton_attention.py tests/test_triton_engine.py 2>&1 | tee "$OUT/tests.log"
  timeout "${BENCH_TIMEOUT:-420}" python3 bench/engine.py --device cuda --shape llama-1b \
    --repeats "${REPEATS:-3}" \
    --json "$OUT/engine-cuda.json" 2>&1 | tee "$OUT/engine-cuda.txt"
  timeout "${TILES_TIMEOUT:-150}" python3 bench/triton_tiles.py 2>&1 | tee "$OUT/tiles.txt"
  timeout "${PROFILE_TIMEOUT:-120}" python3 bench/step_profile.py --device cuda \
    --shape llama-1b --batch 128 2>&1 | tee "$OUT/profile.txt"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bench/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
