"""Time an engine's decode steps, the shared loop of the step-cost benchmarks
(bench/logprobs.py, bench/hostile_schema.py)."""

from __future__ import annotations

import time

from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.sampling_params import SamplingParams


def decode_steps(
    engine: LLMEngine, prompts: list[list[int]], steps: int, logprobs: int | None = None
) -> list[float]:
    """Seconds of each decode step of one batch of greedy requests (the prefill untimed)."""
    params = SamplingParams(
        max_tokens=steps + 1, temperature=0.0, ignore_eos=True, logprobs=logprobs
    )
    for p in prompts:
        engine.add_request(p, params)
    got: set[str] = set()
    while len(got) < len(prompts):  # prefill: every request has its first token
        got.update(o.request_id for o in engine.step())
    times = []
    while engine.has_unfinished():
        t = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t)
    return times
