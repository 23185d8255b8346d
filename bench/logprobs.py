"""What logprobs cost a decode step: batch 8 decoding with none, with each token's logprob
(k = 0) and with the top 20 alternatives (k = 20, the most Chat allows), in the same run.

Each round builds the batch (8 prompts of ~40 tokens, fixed-length outputs), runs its
prefill, then times each decode step; the three settings take turns round after round,
so a machine that slows for a while slows them alike. Prints the median step (ms) of each
setting and its ratio to the step without logprobs. The target (issue 30): logprobs cost
at most 5 % of the step.

    .venv/bin/python bench/logprobs.py [--dtype auto|float32|bfloat16] [--rounds 5]
                                       [--batch 8] [--steps 48]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.model.device import cpu_model, resolve_dtype
from promptcache.model.loading.loader import load_model

sys.path.insert(0, str(Path(__file__).parent))
from steps import decode_steps

SETTINGS: dict[str, int | None] = {"none": None, "logprob": 0, "top 20": 20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=48)
    args = ap.parse_args()
    model = load_model(None, dtype=resolve_dtype(args.dtype, torch.device("cpu")))
    engine = LLMEngine(model, EngineConfig(kv_cache_bytes=256 << 20, enable_prefix_caching=False))
    text = "Logprobs report how likely each sampled token was, and its top alternatives. "
    base = model.tokenizer.encode(text * 3, add_special_tokens=False)
    prompts = [[i + 100, *base] for i in range(args.batch)]
    print(f"{cpu_model()}; {model.dtype}; {torch.get_num_threads()} threads")
    print(f"batch {args.batch}, {args.steps} decode steps a round, {args.rounds} rounds")
    decode_steps(engine, prompts, 4)  # warm-up
    steps: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, k in SETTINGS.items():
            steps[name] += decode_steps(engine, prompts, args.steps, k)
    base_ms = statistics.median(steps["none"]) * 1e3
    for name, times in steps.items():
        ms = statistics.median(times) * 1e3
        print(f"{name:>8}: {ms:7.2f} ms a step  ({ms / base_ms:5.3f}x)")


if __name__ == "__main__":
    main()
