"""Hostile schemas: what a schema that compiles for long costs the decode steps of other
requests, and how long such schemas compile.

1. **Compile times.** `pattern_schema(n)` (n string properties whose patterns XGrammar
   expands, `[a-z]{1,k}[0-9]+`) for each `--sizes`, compiled once on the bundled tokenizer.
2. **Inter-token latency.** One request decodes `--steps` tokens (greedy) alone, then while
   hostile compiles run without pause in the grammar compile threads (each a new
   `pattern_schema(--hostile)`, budget lifted so it runs to its end, as it does in the
   background after its 400). Printed: the median and p90 step time of each, and their
   ratio (with / without), over `--rounds` alternating rounds.

    .venv/bin/python bench/hostile_schema.py [--sizes 10,14,20,50] [--hostile 50]
                                             [--steps 64] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from promptcache.config import EngineConfig
from promptcache.engine.grammar.spec import OutputKind, OutputSpec
from promptcache.engine.llm_engine import LLMEngine
from promptcache.model.device import cpu_model
from promptcache.model.loading.loader import load_model

sys.path.insert(0, str(Path(__file__).parent))
from steps import decode_steps


def pattern_schema(n: int, salt: int = 0) -> dict[str, Any]:
    """An object of `n` required strings, the i-th matching `[a-z]{1,i+2}[0-9]+`: about
    70 bytes a property, and a compile that grows fast with n (XGrammar expands each
    bounded repetition). `salt` (the title) makes distinct schemas of the same cost."""
    props = {f"p{i}": {"type": "string", "pattern": f"[a-z]{{1,{i + 2}}}[0-9]+"} for i in range(n)}
    return {"title": f"s{salt}", "type": "object", "properties": props, "required": list(props)}


def spec(schema: dict[str, Any]) -> OutputSpec:
    return OutputSpec(kind=OutputKind.JSON_SCHEMA, schema=json.dumps(schema))


def compile_times(engine: LLMEngine, sizes: list[int]) -> None:
    for n in sizes:
        schema = pattern_schema(n, salt=-n)
        start = time.perf_counter()
        engine.grammars.get(spec(schema))
        took = time.perf_counter() - start
        print(f"pattern_schema({n}): {len(json.dumps(schema))} bytes, compiled in {took:.3f} s")


class Hostile(threading.Thread):
    """Compiles distinct hostile schemas one after another until stopped."""

    def __init__(self, engine: LLMEngine, n: int, first_salt: int) -> None:
        super().__init__(daemon=True)
        self.engine, self.n, self.salt = engine, n, first_salt
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.salt += 1
            self.engine.grammars.get(spec(pattern_schema(self.n, self.salt)))


def _summary(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), statistics.quantiles(times, n=10)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,14,20,50")
    ap.add_argument("--hostile", type=int, default=50)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = load_model(None, dtype=torch.float32)
    config = EngineConfig(
        kv_cache_bytes=256 << 20,
        grammar_compile_timeout_s=3600.0,  # lifted: each compile runs to its end
        grammar_compile_threads=args.threads,
    )
    engine = LLMEngine(model, config)
    print(f"CPU: {cpu_model()}; torch threads {torch.get_num_threads()}")
    compile_times(engine, [int(s) for s in args.sizes.split(",")])
    prompt = model.tokenizer.encode("Tell me a long story about a lighthouse.")
    decode_steps(engine, [prompt], 8)  # warm-up
    alone: list[float] = []
    beside: list[float] = []
    for r in range(args.rounds):
        alone += decode_steps(engine, [prompt], args.steps)
        compilers = [
            Hostile(engine, args.hostile, 1000 * (r * args.threads + i))
            for i in range(args.threads)
        ]
        for c in compilers:
            c.start()
        time.sleep(0.2)  # the compiles are under way
        beside += decode_steps(engine, [prompt], args.steps)
        for c in compilers:
            c.stop.set()
        for c in compilers:
            c.join()
    (m0, p0), (m1, p1) = _summary(alone), _summary(beside)
    print(f"decode step alone:                   median {m0 * 1e3:.1f} ms, p90 {p0 * 1e3:.1f} ms")
    print(f"decode step beside hostile compiles: median {m1 * 1e3:.1f} ms, p90 {p1 * 1e3:.1f} ms")
    print(f"inter-token latency ratio (with / without): median {m1 / m0:.2f}, p90 {p1 / p0:.2f}")
    engine.close()


if __name__ == "__main__":
    main()
