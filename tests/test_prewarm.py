"""Prefill-only requests (prewarms) in the engine: they compute exactly the prompt blocks
they cache, sample nothing, finish with no output, and a later request reuses them."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.cache.settings import Breakpoint, CacheMode, CacheSettings, Retention
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.engine.scheduler import ScheduledSeq
from promptcache.model.loading.loader import LoadedModel
from tests.helpers import random_tokens, run_one

ONE = SamplingParams(max_tokens=1, temperature=0)


class _Meter:
    """Counts the prompt tokens the model computes and the rows whose logits it takes."""

    def __init__(self, engine: LLMEngine) -> None:
        self.tokens = 0
        self.logit_rows = 0
        runner, module = engine.runner, engine.runner.module
        execute, logits = runner.execute, module.compute_logits

        def counted_execute(scheduled: list[ScheduledSeq]) -> Any:
            self.tokens += sum(s.num_tokens for s in scheduled)
            return execute(scheduled)

        def counted_logits(hidden: Any) -> Any:
            self.logit_rows += hidden.shape[0]
            return logits(hidden)

        runner.execute = counted_execute  # type: ignore[method-assign]
        module.compute_logits = counted_logits  # type: ignore[method-assign]

    def take(self) -> tuple[int, int]:
        got = (self.tokens, self.logit_rows)
        self.tokens = self.logit_rows = 0
        return got


def _run(
    engine: LLMEngine, prompt: list[int], prewarm: bool, settings: CacheSettings | None = None
) -> RequestOutput:
    request = GenerationRequest(prompt, ONE, settings or CacheSettings(), prefill_only=prewarm)
    return run_one(engine, request)


def test_prewarm_computes_the_full_blocks_and_samples_nothing(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    meter = _Meter(engine)
    prompt = random_tokens(1100)  # 68 full blocks of 16 (1088 tokens) and 12 more
    warm = _run(engine, prompt, prewarm=True)
    assert meter.take() == (1088, 0)  # the partial tail is not computed; no logits at all
    assert (warm.finish_reason, warm.token_ids, warm.text) == ("stop", [], "")
    u = warm.usage
    assert (u.prompt_tokens, u.completion_tokens, u.reused_tokens) == (1100, 0, 0)
    assert (u.written_tokens, u.cache_write_tokens, u.cached_tokens) == (1088, 1024, 0)
    assert warm.ttft_s is None and engine.pool.num_in_use == 0
    assert engine.pool.num_cached == 68
    real = _run(engine, prompt, prewarm=False)
    assert meter.take() == (12, 1)  # only the tail, and one row of logits
    assert (real.usage.reused_tokens, real.usage.cached_tokens) == (1088, 1024)
    assert real.usage.written_tokens == real.usage.cache_write_tokens == 0
    again = _run(engine, prompt, prewarm=True)  # all of it cached: nothing runs
    assert meter.take() == (0, 0)
    assert (again.usage.reused_tokens, again.usage.written_tokens) == (1088, 0)
    assert again.usage.cache_write_tokens == 0


def test_prewarm_of_a_block_aligned_prompt_reuses_it_all(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    meter = _Meter(engine)
    prompt = random_tokens(1088)
    assert _run(engine, prompt, prewarm=True).usage.written_tokens == 1088
    assert meter.take() == (1088, 0)
    again = _run(engine, prompt, prewarm=True)  # no last-token rule: nothing is sampled
    assert meter.take() == (0, 0) and again.usage.reused_tokens == 1088
    real = _run(engine, prompt, prewarm=False)  # its last token is computed (SPEC S5)
    assert meter.take() == (16, 1)
    assert (real.usage.reused_tokens, real.usage.written_tokens) == (1072, 0)


def test_prewarm_extends_a_cached_prefix(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    meter = _Meter(engine)
    prompt = random_tokens(1300)
    _run(engine, prompt[:1040], prewarm=False)  # caches 65 blocks
    meter.take()
    warm = _run(engine, prompt, prewarm=True)
    assert meter.take() == (1296 - 1040, 0)
    assert (warm.usage.reused_tokens, warm.usage.written_tokens) == (1040, 1296 - 1040)
    assert warm.usage.cached_tokens == 1024


def test_prewarm_honours_explicit_breakpoints(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=32 << 20)
    meter = _Meter(engine)
    prompt = random_tokens(1200)
    half = Retention.THIRTY_MINUTES
    marks = (Breakpoint(1037, half),)
    explicit = CacheSettings(retention=half, mode=CacheMode.EXPLICIT, breakpoints=marks)
    warm = _run(engine, prompt, prewarm=True, settings=explicit)
    assert meter.take() == (1037, 0)  # to the breakpoint, not to the last full block
    assert (warm.usage.written_tokens, warm.usage.cache_write_tokens) == (1037, 1037)
    assert engine.cache.counters.breakpoint_writes == 1
    real = _run(engine, prompt, prewarm=False, settings=explicit)
    assert meter.take() == (1200 - 1037, 1)
    assert (real.usage.cached_tokens, real.usage.reused_tokens) == (1037, 1037)
    assert real.usage.written_tokens == 0
    nothing = CacheSettings(retention=half, mode=CacheMode.EXPLICIT)  # no breakpoints
    idle = _run(engine, random_tokens(1200, seed=3), prewarm=True, settings=nothing)
    assert meter.take() == (0, 0) and idle.usage.written_tokens == 0


def test_prewarm_with_a_breakpoint_at_the_prompt_end(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=32 << 20)
    meter = _Meter(engine)
    prompt = random_tokens(1100)
    half = Retention.THIRTY_MINUTES
    settings = CacheSettings(retention=half, breakpoints=(Breakpoint(1100, half),))
    warm = _run(engine, prompt, prewarm=True, settings=settings)
    assert meter.take() == (1100, 0)  # every position, still no logits
    assert warm.usage.written_tokens == 1100
    again = _run(engine, prompt, prewarm=True, settings=settings)
    assert meter.take() == (0, 0) and again.usage.reused_tokens == 1100


@pytest.mark.parametrize("caching", [True, False])
def test_prewarm_with_nothing_to_cache_runs_nothing(
    tiny_long: LoadedModel, make_engine: Any, caching: bool
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20, enable_prefix_caching=caching)
    meter = _Meter(engine)
    prompt = random_tokens(10 if caching else 1100)  # under one block / caching off
    out = _run(engine, prompt, prewarm=True)
    assert meter.take() == (0, 0)
    assert out.finished and out.usage.written_tokens == 0 and out.token_ids == []


def test_prewarm_prompt_may_fill_the_context(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20, max_model_len=1024)
    out = _run(engine, random_tokens(1024), prewarm=True)
    assert out.usage.written_tokens == 1024
