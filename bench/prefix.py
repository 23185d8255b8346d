"""Prefix-cache benchmark on the bundled model: the seed experiment and a shared-prefix load.

1. Seed experiment (the prompt-caching tutorial): a 4,616-token instruction prefix, then
   "What's overfitting in machine learning?" (a miss) and "What's regularization?" (a hit).
   Prints prompt tokens, cached tokens and time to first token of both, and their ratio. Each repeat
   uses a fresh tenant salt, so its first call is a true miss.
2. Shared-prefix load: G groups x P questions sharing a 1,024–2,048-token system prompt
   per group, O output tokens, requests interleaved across groups and submitted together;
   throughput, TTFT p50/p90 and hit rate with the cache on and off.

    .venv/bin/python bench/prefix.py [--dtype auto] [--repeats 3] [--groups 8 --per-group 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import time
from typing import Any

import torch

from promptcache.bench.text import INSTRUCTION, SEED_PREFIX_TOKENS, SEED_QUESTIONS, trimmed_text
from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.device import resolve_device, resolve_dtype
from promptcache.model.loading.loader import LoadedModel, load_model
from promptcache.text.chat import chat_prompt_ids

TOPICS = [
    "linear regression",
    "decision trees",
    "neural networks",
    "clustering",
    "gradient descent",
    "evaluation metrics",
    "feature engineering",
    "probability",
]
QUESTIONS = [
    "What is it used for?",
    "How do I know it works?",
    "What can go wrong?",
    "Give me a one-line summary.",
    "How does it scale to big data?",
    "What should I read next?",
    "How is it different from the alternatives?",
    "Which parameters matter most?",
]


def chat(model: LoadedModel, system: str, question: str) -> list[int]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return chat_prompt_ids(model.tokenizer, messages)


def run_together(
    engine: LLMEngine, prompts: list[list[int]], params: SamplingParams, salt: str | None = None
) -> tuple[list[RequestOutput], float]:
    """Submit all prompts at once; returns final outputs (in order) and wall time."""
    start = time.perf_counter()
    ids = [engine.add_request(p, params, cache_salt=salt) for p in prompts]
    final: dict[str, RequestOutput] = {}
    while engine.has_unfinished():
        final.update({o.request_id: o for o in engine.step() if o.finished})
    return [final[i] for i in ids], time.perf_counter() - start


def seed_experiment(model: LoadedModel, config: EngineConfig, repeats: int) -> dict[str, Any]:
    engine = LLMEngine(model, config)
    system = trimmed_text(model.tokenizer, INSTRUCTION, SEED_PREFIX_TOKENS)
    prompts = [chat(model, system, q) for q in SEED_QUESTIONS[:2]]
    params = SamplingParams(max_tokens=32, temperature=0)
    run_together(engine, [prompts[0][:64]], params)  # warm-up, below the cache minimum
    rows = []
    for r in range(repeats):
        salt = f"seed-run-{r}"
        miss = run_together(engine, [prompts[0]], params, salt)[0][0]
        hit = run_together(engine, [prompts[1]], params, salt)[0][0]
        rows.append((miss, hit))
        engine.check_integrity()
    ttft_miss = statistics.median(m.ttft_s or 0.0 for m, _ in rows)
    ttft_hit = statistics.median(h.ttft_s or 0.0 for _, h in rows)
    miss, hit = rows[-1]
    print("## seed experiment")
    print(f"instruction prefix: {SEED_PREFIX_TOKENS} tokens; medians of {repeats} repeats")
    print("| call | question | prompt tokens | cached tokens | TTFT (s) | total (s) |")
    print("|---|---|---|---|---|---|")
    for i, name in enumerate(("1 (miss)", "2 (hit)")):
        q, o = SEED_QUESTIONS[i], rows[-1][i]
        ttft = statistics.median(r[i].ttft_s or 0.0 for r in rows)
        total = statistics.median(r[i].total_s or 0.0 for r in rows)
        print(
            f"| {name} | {q} | {o.usage.prompt_tokens} | {o.usage.cached_tokens} "
            f"| {ttft:.3f} | {total:.3f} |"
        )
    ratio = ttft_hit / ttft_miss
    print(f"hit TTFT / miss TTFT = {ratio:.3f} ({100 * ratio:.1f} %; target <= 5 %)\n")
    return {
        "prompt_tokens": [miss.usage.prompt_tokens, hit.usage.prompt_tokens],
        "cached_tokens": [miss.usage.cached_tokens, hit.usage.cached_tokens],
        "ttft_miss_s": ttft_miss,
        "ttft_hit_s": ttft_hit,
        "ratio": ratio,
    }


def shared_prefix_prompts(
    model: LoadedModel, groups: int, per_group: int, seed: int
) -> list[list[int]]:
    rng = random.Random(seed)
    systems = []
    for g in range(groups):
        topic = TOPICS[g % len(TOPICS)]
        text = f"Course unit {g}: {topic}. " + INSTRUCTION + f"Today's topic is {topic}. "
        systems.append(trimmed_text(model.tokenizer, text, rng.randint(1024, 2048)))
    order = [(g, q) for q in range(per_group) for g in range(groups)]  # interleaved
    return [chat(model, systems[g], QUESTIONS[q % len(QUESTIONS)]) for g, q in order]


def shared_prefix_load(
    model: LoadedModel, config: EngineConfig, groups: int, per_group: int, output_tokens: int
) -> list[dict[str, Any]]:
    prompts = shared_prefix_prompts(model, groups, per_group, seed=1)
    params = SamplingParams(max_tokens=output_tokens, temperature=0, ignore_eos=True)
    results = []
    for enabled in (True, False):
        cfg = dataclasses.replace(config, enable_prefix_caching=enabled)
        engine = LLMEngine(model, cfg)
        run_together(engine, [prompts[0][:64]], params)  # warm-up
        outs, wall = run_together(engine, prompts, params)
        engine.check_integrity()
        ttfts = sorted(o.ttft_s or 0.0 for o in outs)
        prompt_tokens = sum(o.usage.prompt_tokens for o in outs)
        cached = sum(o.usage.cached_tokens for o in outs)
        results.append(
            {
                "cache": "on" if enabled else "off",
                "requests": len(outs),
                "prompt_tokens": prompt_tokens,
                "cached_tokens": cached,
                "hit_rate": cached / prompt_tokens,
                "wall_s": wall,
                "requests_per_s": len(outs) / wall,
                "output_tokens_per_s": sum(o.usage.completion_tokens for o in outs) / wall,
                "ttft_p50_s": statistics.median(ttfts),
                "ttft_p90_s": ttfts[int(0.9 * (len(ttfts) - 1))],
                "outputs": [o.token_ids for o in outs],
            }
        )
    same = results[0]["outputs"] == results[1]["outputs"]
    print(
        f"## shared-prefix load: {groups} groups x {per_group} questions, "
        f"1,024-2,048-token system prompts, {output_tokens} output tokens, interleaved"
    )
    print(
        "| cache | requests | prompt tokens | cached tokens | hit rate | wall (s) | req/s "
        "| output tok/s | TTFT p50 (s) | TTFT p90 (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['cache']} | {r['requests']} | {r['prompt_tokens']} | {r['cached_tokens']} "
            f"| {100 * r['hit_rate']:.1f} % | {r['wall_s']:.1f} | {r['requests_per_s']:.2f} "
            f"| {r['output_tokens_per_s']:.1f} | {r['ttft_p50_s']:.2f} "
            f"| {r['ttft_p90_s']:.2f} |"
        )
    on, off = results
    print(
        f"throughput on/off = {on['wall_s'] and off['wall_s'] / on['wall_s']:.2f}x; "
        f"greedy outputs identical on/off: {same}\n"
    )
    for r in results:
        del r["outputs"]
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--per-group", type=int, default=4)
    ap.add_argument("--output-tokens", type=int, default=32)
    ap.add_argument("--skip-load", action="store_true", help="only the seed experiment")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    device = resolve_device(args.device)
    model = load_model(args.model, device=device, dtype=resolve_dtype(args.dtype, device))
    print(
        f"# {model.path.name} on {device}, dtype {str(model.dtype).removeprefix('torch.')}, "
        f"{torch.get_num_threads()} threads\n"
    )
    config = EngineConfig()
    result: dict[str, Any] = {"seed": seed_experiment(model, config, args.repeats)}
    if not args.skip_load:
        result["shared_prefix"] = shared_prefix_load(
            model, config, args.groups, args.per_group, args.output_tokens
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
