"""Explicit breakpoints in the engine: entries that end exactly at a token (partial blocks,
copied on write), explicit and implicit modes, the latest-80 lookback, tenants, expiry of
short retentions and the host tier for long ones; float32 outputs equal to no caching."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.cache.breakpoints import LOOKBACK
from promptcache.cache.settings import Breakpoint, CacheMode, CacheSettings, Retention
from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import LoadedModel
from tests.helpers import random_tokens, run_one

SIX = SamplingParams(max_tokens=6, temperature=0)
EXPLICIT, IMPLICIT = CacheMode.EXPLICIT, CacheMode.IMPLICIT
HALF_HOUR = Retention.THIRTY_MINUTES


def _run(
    engine: LLMEngine,
    prompt: list[int],
    *marks: int,
    mode: CacheMode = EXPLICIT,
    ttl: Retention = HALF_HOUR,
    tenant: str | None = None,
) -> RequestOutput:
    marked = tuple(Breakpoint(p, ttl) for p in marks)
    settings = CacheSettings(tenant=tenant, retention=ttl, mode=mode, breakpoints=marked)
    return run_one(engine, GenerationRequest(prompt, SIX, settings))


def _uncached(make_engine: Any, model: LoadedModel, prompt: list[int]) -> list[int]:
    off = make_engine(model, kv_cache_bytes=16 << 20, enable_prefix_caching=False)
    return _run(off, prompt).token_ids


def test_mid_block_breakpoint_is_hit_to_the_token(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=32 << 20)
    doc = random_tokens(1100)
    mark = 1037  # 64 full blocks and 13 tokens
    first = _run(engine, doc + random_tokens(40, seed=1), mark)
    assert (first.usage.cached_tokens, first.usage.cache_write_tokens) == (0, mark)
    assert first.usage.written_tokens == mark
    other = doc[:mark] + random_tokens(60, seed=2)
    second = _run(engine, other, mark)
    assert second.usage.cached_tokens == mark  # not 1024, not 1036: the breakpoint itself
    assert second.usage.reused_tokens == mark and second.usage.cache_write_tokens == 0
    assert second.token_ids == _uncached(make_engine, tiny_long, other)
    third = _run(engine, other, mark)  # the partial block was copied, never written over
    assert third.usage.cached_tokens == mark
    assert third.token_ids == second.token_ids
    assert engine.cache.counters.breakpoint_hits == 2


def test_explicit_mode_writes_nothing_without_breakpoints(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=32 << 20)
    prompt = random_tokens(1200)
    first = _run(engine, prompt)
    assert first.usage.cache_write_tokens == 0 and first.usage.written_tokens == 0
    assert engine.pool.num_cached == 0
    again = _run(engine, prompt)
    assert again.usage.cached_tokens == 0 and again.usage.reused_tokens == 0


def test_explicit_mode_matches_only_at_breakpoints(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    """The blocks of a breakpoint's prefix are cached, but explicit matching does not fall
    back to a shorter unmarked prefix; implicit matching does."""
    engine = make_engine(tiny_long, kv_cache_bytes=32 << 20)
    doc = random_tokens(1300)
    _run(engine, [*doc, 7, 7], 1290)
    shorter = doc[:1200] + random_tokens(30, seed=3)  # shares 1,200 tokens, not 1,290
    assert _run(engine, shorter).usage.cached_tokens == 0
    implicit = _run(engine, shorter, mode=IMPLICIT)
    assert implicit.usage.reused_tokens == 1200 // 16 * 16
    assert implicit.usage.cached_tokens == 1152  # OpenAI's rules for the implicit hit


def test_implicit_mode_adds_exact_entries(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=32 << 20)
    doc = random_tokens(1500)
    first = _run(engine, doc, 1101, mode=IMPLICIT)
    # implicit writes: 93 full blocks (1,488 tokens, reported 1,408), the breakpoint less
    assert first.usage.cache_write_tokens == 1408
    other = doc[:1101] + random_tokens(50, seed=4)
    second = _run(engine, other, mode=IMPLICIT)
    assert (second.usage.cached_tokens, second.usage.reused_tokens) == (1101, 1101)
    assert second.token_ids == _uncached(make_engine, tiny_long, other)
    longer = doc[:1400] + random_tokens(50, seed=5)  # the automatic entry beats it
    assert _run(engine, longer, mode=IMPLICIT).usage.reused_tokens == 1392


def test_only_the_latest_breakpoints_are_matched(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=32 << 20, min_breakpoint_tokens=16)
    prompts = [random_tokens(40, seed=100 + i) for i in range(LOOKBACK + 1)]
    for p in prompts:
        assert _run(engine, p, 37).usage.cache_write_tokens == 37
    assert _run(engine, [*prompts[0][:37], 9, 9]).usage.cached_tokens == 0  # 81st newest
    assert _run(engine, [*prompts[1][:37], 9, 9]).usage.cached_tokens == 37


def test_short_breakpoints_and_other_tenants_get_nothing(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=32 << 20)
    short = random_tokens(900)
    assert _run(engine, short, 850).usage.cache_write_tokens == 0  # under 1,024 tokens
    assert engine.cache.counters.breakpoints_skipped == 1
    doc = random_tokens(1200, seed=6)
    assert _run(engine, doc, 1111, tenant="a").usage.cache_write_tokens == 1111
    assert _run(engine, doc, 1111, tenant="b").usage.cached_tokens == 0
    assert _run(engine, doc, 1111, tenant="a").usage.cached_tokens == 1111


def test_five_minute_entries_expire_unless_hit(tiny_long: LoadedModel, tmp_path: Any) -> None:
    now = [1000.0]
    config = EngineConfig(kv_cache_bytes=32 << 20, disk_cache_dir=str(tmp_path / "kv"))
    engine = LLMEngine(tiny_long, config, clock=lambda: now[0])
    try:
        doc = random_tokens(1200)
        five = Retention.FIVE_MINUTES
        _run(engine, doc, 1100, ttl=five)
        now[0] += 240
        assert _run(engine, doc, 1100, ttl=five).usage.cached_tokens == 1100
        now[0] += 240  # 480 s after the write, 240 s after the hit that refreshed it
        assert _run(engine, doc, 1100, ttl=five).usage.cached_tokens == 1100
        now[0] += 301
        engine.pool.sweep(force=True)
        assert _run(engine, doc, 1100, ttl=five).usage.cached_tokens == 0
        engine.check_integrity()
    finally:
        engine.close()


def test_one_hour_entries_survive_pool_turnover_in_the_host_tier(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    per_block = 16 * tiny_long.spec.kv_bytes_per_token * 4
    engine = make_engine(
        tiny_long, kv_cache_bytes=100 * per_block, host_cache_bytes=200 * per_block
    )
    doc = random_tokens(1200)
    for ttl, mark in ((Retention.ONE_HOUR, 1107), (Retention.FIVE_MINUTES, 1150)):
        _run(engine, doc, mark, ttl=ttl)
    for seed in range(3):  # three other prompts turn the 100-block pool over
        _run(engine, random_tokens(1500, seed=50 + seed), mode=IMPLICIT)
    back = _run(engine, doc, 1107, 1150, ttl=Retention.ONE_HOUR)
    assert back.usage.cached_tokens == 1107  # the 5m entry was dropped, the 1h one kept
    assert back.cache is not None and back.cache.reused_from_host == 1107
    assert back.token_ids == _uncached(make_engine, tiny_long, doc)


@pytest.mark.slow
def test_bundled_outputs_equal_with_breakpoints_automatic_and_no_caching(
    bundled: LoadedModel, make_engine: Any
) -> None:
    tok = bundled.tokenizer
    doc = tok.encode("Notes on harbours, tides and charts. " * 150, add_special_tokens=False)
    doc = doc[:1061]  # 66 blocks and 5 tokens
    tails = [tok.encode(q, add_special_tokens=False) for q in (" High water?", " Low water?")]
    twelve = SamplingParams(max_tokens=12, temperature=0)
    outputs = []
    for caching, mode in ((False, IMPLICIT), (True, IMPLICIT), (True, EXPLICIT)):
        engine = make_engine(bundled, kv_cache_bytes=64 << 20, enable_prefix_caching=caching)
        marks = (Breakpoint(len(doc), HALF_HOUR),)
        settings = CacheSettings(retention=HALF_HOUR, mode=mode, breakpoints=marks)
        texts = []
        for tail in tails:
            engine.submit(GenerationRequest(doc + tail, twelve, settings, request_id="r"))
            final = next(o for o in _drain(engine) if o.finished)
            texts.append(final.token_ids)
        if caching:
            # the breakpoint (1,061) beats the automatic entry (1,056) in implicit mode too
            assert final.usage.cached_tokens == final.usage.reused_tokens == len(doc)
        outputs.append(texts)
    assert outputs[0] == outputs[1] == outputs[2]


def _drain(engine: LLMEngine) -> list[RequestOutput]:
    out = []
    while engine.has_unfinished():
        out.extend(engine.step())
    return out
