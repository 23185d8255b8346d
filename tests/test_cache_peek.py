"""`LLMEngine.peek` (over `PrefixCache.peek`): what a prompt would reuse if submitted now
equals what the next real request of it reuses and reports, in the pool and from the host
tier, and peeking changes nothing (no hold, refresh, drop of an expired block, counter)."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.cache.settings import CacheSettings, Retention
from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.outputs import PrefixReuse
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import LoadedModel
from tests.helpers import FakeClock, random_tokens, run_one

ONE = SamplingParams(max_tokens=1, temperature=0)


def _request(prompt: list[int], retention: str = "in_memory") -> GenerationRequest:
    return GenerationRequest(prompt, ONE, CacheSettings(retention=Retention(retention)))


def _state(engine: LLMEngine) -> tuple[Any, ...]:
    """Every block's holders, hash, retention and times, the eviction order, the figures."""
    pool = engine.pool
    blocks = [
        (b.ref_count, b.block_hash, b.retention, b.last_use, b.cached_at) for b in pool.blocks
    ]
    return blocks, [b.block_id for b in pool.free_queue], engine.stats()


@pytest.mark.parametrize("length", [1000, 1100, 1153, 2000, 2100])
def test_peek_is_the_next_requests_reuse_and_changes_nothing(
    tiny_long: LoadedModel, make_engine: Any, length: int
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    base = random_tokens(2000)
    prompt = (base + random_tokens(100, seed=9))[:length]
    assert engine.peek(_request(prompt)) == PrefixReuse(0, 0)
    run_one(engine, _request(base))
    before = _state(engine)
    peek = engine.peek(_request(prompt))
    assert _state(engine) == before
    out = run_one(engine, _request(prompt))
    assert peek == PrefixReuse(out.usage.reused_tokens, out.usage.cached_tokens)
    assert peek.reused_tokens == (min(length, 2001) - 1) // 16 * 16


def test_peek_passes_expired_blocks_over_without_dropping_them(tiny_long: LoadedModel) -> None:
    clock = FakeClock()
    engine = LLMEngine(tiny_long, EngineConfig(kv_cache_bytes=16 << 20), clock=clock)
    prompt = random_tokens(1300, seed=3)
    run_one(engine, _request(prompt))
    assert engine.peek(_request(prompt)).reused_tokens == 1296
    clock.now += 2 * 3600  # past in_memory's lifetime
    before = _state(engine)
    assert engine.peek(_request(prompt)) == PrefixReuse(0, 0)
    assert _state(engine) == before  # still indexed: a lookup drops it, a peek does not
    assert run_one(engine, _request(prompt)).usage.reused_tokens == 0


def test_peek_counts_blocks_in_the_host_tier(tiny_long: LoadedModel, make_engine: Any) -> None:
    per_block = 16 * tiny_long.spec.kv_bytes_per_token * 4
    engine = make_engine(
        tiny_long, kv_cache_bytes=120 * per_block, host_cache_bytes=400 * per_block
    )
    a, b = random_tokens(1300, seed=40), random_tokens(1300, seed=41)
    run_one(engine, _request(a, "24h"))
    run_one(engine, _request(b, "in_memory"))  # evicts most of A: its blocks go to host memory
    loads = engine.stats()["host_loads_total"]
    peek = engine.peek(_request(a, "24h"))
    assert engine.stats()["host_loads_total"] == loads
    again = run_one(engine, _request(a, "24h"))
    assert peek == PrefixReuse(again.usage.reused_tokens, again.usage.cached_tokens)
    assert peek.reused_tokens == 1296 and engine.stats()["host_loads_total"] > loads
