"""What n > 1 costs: one request with n = 8 choices over a ~2,000-token prompt, beside 8
separate requests for the same prompt sent together (one tenant each, so they share
nothing, as 8 clients would), and beside one request with n = 1, in the same run.

Each round takes a fresh prompt (its first token differs, so no round hits an earlier
one's blocks); the settings take turns round after round. Printed, medians over rounds:
the prompt tokens the engine computed (prefill work), the time to the first choice's first
token and to the last choice's first token, and each setting's ratio to n = 1. The target
(issue 30): n = 8 costs one prefill.

    .venv/bin/python bench/choices.py [--dtype auto|float32|bfloat16] [--rounds 3]
                                      [--n 8] [--prompt-tokens 2000] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from promptcache.cache.settings import CacheSettings
from promptcache.config import EngineConfig
from promptcache.engine.choices import fan_out
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.device import cpu_model, resolve_dtype
from promptcache.model.loading.loader import load_model

TEXT = "A careful survey of tidal pools records limpets, anemones and small crabs by depth. "


@dataclass(frozen=True, slots=True)
class Round:
    prefill_tokens: int  # prompt tokens the engine computed
    first_s: float  # until the first choice's first token
    last_s: float  # until every choice has its first token


def count_prefill(engine: LLMEngine) -> list[int]:
    """Wrap the scheduler to record the prompt tokens each step computes."""
    computed: list[int] = []
    schedule = engine.scheduler.schedule

    def recording() -> Any:
        out = schedule()
        for item in out.scheduled:
            start, n = item.seq.num_computed, item.num_tokens
            computed.append(max(0, min(start + n, item.seq.num_prompt_tokens) - start))
        return out

    engine.scheduler.schedule = recording
    return computed


def requests(
    setting: str, prompt: list[int], n: int, params: SamplingParams, tag: str
) -> list[GenerationRequest]:
    if setting == "n=1":
        return [GenerationRequest(prompt, params, request_id=tag)]
    if setting.startswith("n="):
        return fan_out(GenerationRequest(prompt, params, request_id=tag), n)
    return [  # separate requests, a tenant each: nothing shared
        GenerationRequest(
            prompt, params, CacheSettings(tenant=f"{tag}-{j}"), request_id=f"{tag}-{j}"
        )
        for j in range(n)
    ]


def run_round(engine: LLMEngine, reqs: list[GenerationRequest], computed: list[int]) -> Round:
    computed.clear()
    start = time.perf_counter()
    ids = [engine.submit(r) for r in reqs]
    firsts: dict[str, float] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.new_token_ids and out.request_id not in firsts:
                firsts[out.request_id] = time.perf_counter() - start
    return Round(sum(computed), firsts[ids[0]], max(firsts.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    model = load_model(None, dtype=resolve_dtype(args.dtype, torch.device("cpu")))
    engine = LLMEngine(model, EngineConfig(kv_cache_bytes=512 << 20))
    computed = count_prefill(engine)
    base = model.tokenizer.encode(TEXT * 200, add_special_tokens=False)[: args.prompt_tokens - 1]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=1.0, seed=1, ignore_eos=True)
    settings = ["n=1", f"n={args.n}", f"{args.n} separate"]
    print(f"{cpu_model()}; {model.dtype}; {torch.get_num_threads()} threads")
    print(f"prompt {len(base) + 1} tokens, {args.max_tokens} output tokens, {args.rounds} rounds")
    run_round(engine, requests("n=1", [5, *base[:200]], 1, params, "warm"), computed)
    got: dict[str, list[Round]] = {s: [] for s in settings}
    for r in range(args.rounds):
        for i, setting in enumerate(settings):
            prompt = [1000 + r * len(settings) + i, *base]  # fresh: no earlier round's blocks
            reqs = requests(setting, prompt, args.n, params, f"r{r}-{i}")
            got[setting].append(run_round(engine, reqs, computed))
            print(f"  round {r + 1} {setting}: {got[setting][-1]}", flush=True)
    one = medians(got["n=1"])
    print(f"{'setting':>12} | prefill tokens | first token s | all first tokens s")
    for setting, rounds in got.items():
        med = medians(rounds)
        cells = [f"{med[k]:{w}} ({med[k] / one[k]:4.2f}x)" for k, w in COLUMNS]
        print(f"{setting:>12} | " + " | ".join(cells))


COLUMNS = (("prefill_tokens", ">7.0f"), ("first_s", "6.2f"), ("last_s", "6.2f"))


def medians(rounds: list[Round]) -> dict[str, float]:
    return {k: statistics.median(getattr(x, k) for x in rounds) for k, _ in COLUMNS}


if __name__ == "__main__":
    main()
