#!/usr/bin/env bash
# Install llama-cpp-python (with its OpenAI-compatible server) into its own virtual
# environment, for benchmarks only (never a dependency of promptcache). Compiles llama.cpp
# (~6 min on 2 cores). Prints the environment's python, for bench/compare.py.
#   bash bench/peers/llamacpp.sh
set -euo pipefail
PEERS="${PROMPTCACHE_PEERS:-$HOME/.cache/promptcache/peers}"
VENV="$PEERS/llamacpp"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  mkdir -p "$PEERS"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'llama-cpp-python[server]' >&2
fi
echo "$VENV/bin/python"
