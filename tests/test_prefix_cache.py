"""The prefix cache inside the engine: OpenAI's hit lengths, isolation, sharing, eviction,
waiting for a prefix being computed, and outputs identical with the cache on and off."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import LoadedModel
from promptcache.text.chat import chat_prompt_ids
from tests.helpers import FakeClock, random_tokens, until_done

ONE = SamplingParams(max_tokens=1, temperature=0)


def _run(
    engine: LLMEngine, prompt: list[int], salt: str | None = None, params: SamplingParams = ONE
) -> RequestOutput:
    return until_done(engine, engine.add_request(prompt, params, cache_salt=salt))


@pytest.mark.parametrize(
    ("length", "cached"),
    [(1000, 0), (1024, 0), (1100, 1024), (1151, 1024), (1152, 1024), (1153, 1152), (2000, 1920)],
)
def test_openai_hit_lengths(
    tiny_long: LoadedModel, make_engine: Any, length: int, cached: int
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    base = random_tokens(2000)
    first = _run(engine, base)
    assert first.usage.cached_tokens == 0
    assert first.usage.written_tokens == 2000  # 125 full blocks of 16
    assert first.usage.cache_write_tokens == 1920  # as OpenAI reports: 128-token steps
    out = _run(engine, base[:length])
    assert out.usage.cached_tokens == cached
    assert out.usage.reused_tokens == (length - 1) // 16 * 16  # every whole block is reused
    assert out.usage.cached_tokens <= out.usage.reused_tokens
    assert out.usage.prompt_tokens == length
    assert out.usage.cache_write_tokens == out.usage.written_tokens == 0  # a prefix of `base`


@pytest.mark.parametrize(
    ("length", "openai", "exact", "openai_write"),
    [(1000, 0, 992, 0), (1300, 1280, 1296, 1280), (2000, 1920, 1984, 1920)],
)
def test_usage_rules(
    tiny_long: LoadedModel,
    make_engine: Any,
    length: int,
    openai: int,
    exact: int,
    openai_write: int,
) -> None:
    prompt = random_tokens(length)
    for rules, cached, write in (("openai", openai, openai_write), ("exact", exact, None)):
        engine = make_engine(tiny_long, kv_cache_bytes=16 << 20, usage_rules=rules)
        first = _run(engine, prompt)
        assert first.usage.written_tokens == length // 16 * 16
        assert first.usage.cache_write_tokens == (write if write is not None else length // 16 * 16)
        again = _run(engine, prompt)
        assert again.usage.reused_tokens == exact  # physical reuse is the same either way
        assert again.usage.cached_tokens == cached
        assert again.usage.cached_tokens <= again.usage.reused_tokens


def test_divergent_suffix_and_writes(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    base = random_tokens(2000)
    _run(engine, base)
    other = base[:1500] + random_tokens(300, seed=1)
    out = _run(engine, other)
    # 1500 shared tokens = 93 full blocks (1488 tokens), all reused; 1408 reported.
    assert out.usage.reused_tokens == 1488
    assert out.usage.cached_tokens == 1408
    # Blocks 93..111 are new; reported, the cached prefix grew from 1408 to 1792.
    assert out.usage.written_tokens == 1792 - 1488
    assert out.usage.cache_write_tokens == 1792 - 1408
    stats = engine.stats()
    assert stats["prompt_tokens_queried"] == 3800
    assert stats["prompt_tokens_reused"] == 1488


def test_short_prompts_are_reused_and_reported_as_openai(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    short = random_tokens(1000)
    first = _run(engine, short)
    assert first.usage.written_tokens == 992 and first.usage.cache_write_tokens == 0
    assert engine.pool.num_cached == 62
    out = _run(engine, short + random_tokens(200, seed=3))
    assert out.usage.reused_tokens == 992 and out.usage.cached_tokens == 0  # below 1,024
    off = make_engine(tiny_long, kv_cache_bytes=16 << 20, enable_prefix_caching=False)
    assert _run(off, short).usage.written_tokens == 0


def test_a_chat_of_short_turns_builds_on_its_history(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    history: list[int] = []
    reused = []
    for turn in range(3):
        history += random_tokens(300, seed=10 + turn)  # a 300-token turn
        out = _run(engine, history, params=SamplingParams(max_tokens=4, temperature=0))
        reused.append(out.usage.reused_tokens)
        history += out.token_ids
    # Each turn reuses every whole block of the earlier prompt and reply.
    assert reused == [0, 288, 592]  # 300 + 3 computed tokens = 18 full blocks, ...


def test_tenants_never_share(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    prompt = random_tokens(1300)
    assert _run(engine, prompt, salt="tenant-a").usage.cached_tokens == 0
    assert _run(engine, prompt, salt="tenant-b").usage.cached_tokens == 0
    assert _run(engine, prompt, salt="tenant-b").usage.cached_tokens == 1280
    assert _run(engine, prompt, salt="tenant-a").usage.cached_tokens == 1280
    assert _run(engine, prompt).usage.cached_tokens == 0  # no tenant is its own tenant


def test_shared_blocks_are_reference_counted(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    prefix = random_tokens(1280)
    _run(engine, [*prefix, 7])
    params = SamplingParams(max_tokens=4, temperature=0)
    a = engine.add_request(prefix + random_tokens(40, seed=1), params)
    b = engine.add_request(prefix + random_tokens(60, seed=2), params)
    engine.step()
    seqs = {s.request_id: s for s in engine.scheduler.running}
    shared = seqs[a].block_table[:80]
    assert shared == seqs[b].block_table[:80]
    assert all(engine.pool.ref_count(blk) == 2 for blk in shared)
    assert seqs[a].block_table[80:] != seqs[b].block_table[80:]
    engine.check_integrity()
    while engine.has_unfinished():
        engine.step()
    assert all(engine.pool.ref_count(blk) == 0 for blk in shared)
    assert engine.pool.match(seqs[a].cache.block_hashes[:80]) == shared  # still cached


def test_least_recently_used_prefix_is_evicted(tiny_long: LoadedModel, make_engine: Any) -> None:
    per_block = 16 * tiny_long.spec.kv_bytes_per_token * 4
    engine = make_engine(tiny_long, kv_cache_bytes=250 * per_block)  # 4,000 tokens
    x, y, z = random_tokens(1600, 1), random_tokens(1600, 2), random_tokens(1100, 3)
    _run(engine, x)
    _run(engine, y)
    assert engine.pool.num_cached == 200  # both fit; 50 blocks never used
    # z needs 69 blocks: the 50 plain free ones, then 19 of x's, from x's tail.
    _run(engine, z)
    assert engine.stats()["blocks_evicted_total"] == 19
    # y (used more recently) is intact: 99 blocks (1,584 tokens) reused, 1,536 reported;
    # its last 16 tokens are recomputed in one new block, which evicts one more of x's tail.
    out = _run(engine, y)
    assert (out.usage.reused_tokens, out.usage.cached_tokens) == (1584, 1536)
    assert engine.stats()["blocks_evicted_total"] == 20
    # x kept its first 80 blocks (1,280 tokens), all reused.
    out = _run(engine, x)
    assert (out.usage.reused_tokens, out.usage.cached_tokens) == (1280, 1280)


def test_same_new_prefix_waits_instead_of_recomputing(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20, max_num_batched_tokens=512)
    prefix = random_tokens(1400)
    params = SamplingParams(max_tokens=3, temperature=0)
    a = engine.add_request(prefix + random_tokens(30, seed=1), params)
    b = engine.add_request(prefix + random_tokens(50, seed=2), params)
    computed = 0
    final: dict[str, RequestOutput] = {}
    plans = []
    schedule = engine.scheduler.schedule

    def recording() -> Any:
        out = schedule()
        plans.append([(s.seq.request_id, s.num_tokens) for s in out.scheduled])
        return out

    engine.scheduler.schedule = recording  # type: ignore[method-assign]
    while engine.has_unfinished():
        final.update({o.request_id: o for o in engine.step() if o.finished})
    computed = sum(n for plan in plans for _, n in plan)
    assert plans[0] == [(a, 512)]  # b waits: a is computing the prefix it needs
    assert final[a].usage.cached_tokens == 0
    assert final[b].usage.cached_tokens == 1280
    # The 1,400-token prefix was computed once, not twice.
    assert computed < 2 * 1400


BUNDLED_SYSTEM = (
    "You are a careful assistant for a machine-learning course. Answer in plain words, "
    "give one short example, and never invent citations. "
) * 45


def _chat(model: LoadedModel, question: str) -> list[int]:
    return chat_prompt_ids(
        model.tokenizer,
        [{"role": "system", "content": BUNDLED_SYSTEM}, {"role": "user", "content": question}],
    )


QUESTIONS = [
    "What's overfitting in machine learning?",
    "What's regularization?",
    "What is a learning rate?",
]


@pytest.mark.slow
def test_outputs_identical_with_cache_on_and_off(bundled: LoadedModel, make_engine: Any) -> None:
    prompts = [_chat(bundled, q) for q in QUESTIONS]
    assert all(len(p) > 1100 for p in prompts)
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    off = make_engine(bundled, kv_cache_bytes=256 << 20, enable_prefix_caching=False)
    expected = [off.generate([p], params)[0].token_ids for p in prompts]
    on = make_engine(bundled, kv_cache_bytes=256 << 20)
    sequential = [on.generate([p], params)[0] for p in prompts]
    assert [o.token_ids for o in sequential] == expected
    assert sequential[0].usage.cached_tokens == 0
    assert all(o.usage.cached_tokens >= 1024 for o in sequential[1:])
    concurrent = on.generate(prompts, params)  # all hit, batched together
    assert [o.token_ids for o in concurrent] == expected
    assert all(o.usage.cached_tokens >= 1024 for o in concurrent)


@pytest.mark.slow
def test_outputs_identical_under_preemption(bundled: LoadedModel, make_engine: Any) -> None:
    prompts = [_chat(bundled, q) for q in QUESTIONS]
    params = SamplingParams(max_tokens=48, temperature=0, ignore_eos=True)
    off = make_engine(bundled, kv_cache_bytes=256 << 20, enable_prefix_caching=False)
    expected = [o.token_ids for o in off.generate(prompts, params)]
    # Room for the shared prefix plus two prompts' own blocks, and one block to spare:
    # the first two admitted cannot both grow by 48 tokens, so one is preempted.
    bs = 16
    common = next(i for i, (a, b) in enumerate(zip(*prompts[:2], strict=False)) if a != b)
    shared = common // bs  # every shared full block is reused
    own = [-(-len(p) // bs) - shared for p in prompts[:2]]
    per_block = bs * bundled.spec.kv_bytes_per_token * 4
    tight = make_engine(bundled, kv_cache_bytes=(shared + sum(own) + 1) * per_block)
    got = tight.generate(prompts, params)
    assert tight.num_preemptions > 0
    assert [o.token_ids for o in got] == expected
    assert all(o.usage.cached_tokens >= 1024 for o in got[1:])


def test_match_reasons_keep_the_raw_match(tiny_long: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    base = random_tokens(2000)

    def report(prompt: list[int]) -> tuple[str, int, int]:
        out = _run(engine, prompt)
        assert out.cache is not None
        return out.cache.reason, out.cache.matched_tokens, out.usage.cached_tokens

    assert report(base) == ("not_found", 0, 0)
    assert report(base[:1100]) == ("full", 1088, 1024)  # 68 blocks reused, 1,024 reported
    assert report(base[:1153]) == ("full", 1152, 1152)
    assert report(base[:1152]) == ("last_token", 1152, 1024)  # the last token is computed
    assert report(base[:500] + random_tokens(800, seed=6)) == ("full", 496, 0)  # below 1,024
    off = make_engine(tiny_long, kv_cache_bytes=16 << 20, enable_prefix_caching=False)
    out = _run(off, base)
    assert out.cache is not None and out.cache.reason == "disabled"


def test_waiting_for_a_prefix_in_flight_is_recorded(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20, max_num_batched_tokens=2048)
    prompt = random_tokens(1300)
    ids = [engine.add_request(prompt, ONE) for _ in range(2)]
    finals = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
    first, second = finals[ids[0]], finals[ids[1]]
    assert first.cache.waited_steps == 0 and first.usage.cached_tokens == 0
    assert second.cache.waited_steps > 0 and second.usage.cached_tokens == 1280
    assert second.cache.reason == "full" and second.cache.matched_tokens == 1296


def test_cache_settings_reach_the_sequence_and_its_blocks(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    from promptcache.cache.settings import CacheSettings, Retention
    from promptcache.engine.request import GenerationRequest

    engine = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    settings = CacheSettings(tenant="t", retention=Retention.EXTENDED, prompt_cache_key="k")
    request = GenerationRequest(random_tokens(1300), ONE, settings, request_id="r1")
    seq = engine.add(engine.prepare(request))
    assert seq.cache.settings is settings
    table = []
    while engine.has_unfinished():
        table = seq.block_table or table
        for out in engine.step():
            assert out.cache is None or out.cache.retention == "24h"
            assert out.cache is None or out.cache.prompt_cache_key == "k"
    assert len(table) == 82  # 1,301 tokens
    assert {engine.pool.block_retention(b) for b in table[:81]} == {Retention.EXTENDED}


def test_shared_prefix_below_the_minimum_is_reused_with_identical_outputs(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    shared = random_tokens(1000)
    prompts = [shared + random_tokens(60, seed=20 + i) for i in range(3)]
    params = SamplingParams(max_tokens=12, temperature=0)
    off = make_engine(tiny_long, kv_cache_bytes=16 << 20, enable_prefix_caching=False)
    expected = [_run(off, p, params=params).token_ids for p in prompts]
    on = make_engine(tiny_long, kv_cache_bytes=16 << 20)
    got = [_run(on, p, params=params) for p in prompts]
    assert [o.token_ids for o in got] == expected
    assert [o.usage.reused_tokens for o in got] == [0, 992, 992]  # 62 shared blocks
    assert [o.usage.cached_tokens for o in got] == [0, 0, 0]  # under 1,024: reported as 0
    assert on.stats()["prompt_tokens_reused"] == 1984


def test_retention_through_the_engine_with_a_fake_clock(tiny_long: LoadedModel) -> None:
    from promptcache.cache.settings import CacheSettings, Retention
    from promptcache.config import EngineConfig
    from promptcache.engine.request import GenerationRequest

    clock = FakeClock()
    engine = LLMEngine(tiny_long, EngineConfig(kv_cache_bytes=16 << 20), clock=clock)
    day, hour = random_tokens(1300, seed=30), random_tokens(1300, seed=31)
    params = SamplingParams(max_tokens=4, temperature=0)

    def run(prompt: list[int], retention: Retention) -> RequestOutput:
        request = GenerationRequest(prompt, params, CacheSettings(retention=retention))
        return until_done(engine, engine.submit(request))

    first = run(day, Retention.EXTENDED)
    run(hour, Retention.IN_MEMORY)
    clock.now += 2 * 3600  # two idle hours: past in_memory's 10 minutes, well within 24h
    again = run(day, Retention.EXTENDED)
    assert again.usage.cached_tokens == 1280 and again.token_ids == first.token_ids
    gone = run(hour, Retention.IN_MEMORY)
    assert gone.usage.reused_tokens == 0 and gone.cache is not None
    assert gone.cache.evicted_expired and gone.cache.evicted_retention == "in_memory"
    assert engine.stats()["blocks_expired_total"] >= 81  # the in_memory prompt's blocks
    assert engine.pool.num_in_use == 0


def _tiered(tiny_long: LoadedModel, make_engine: Any, pool_blocks: int = 120) -> LLMEngine:
    per_block = 16 * tiny_long.spec.kv_bytes_per_token * 4
    return make_engine(  # type: ignore[no-any-return]
        tiny_long, kv_cache_bytes=pool_blocks * per_block, host_cache_bytes=400 * per_block
    )


def _run_with(
    engine: LLMEngine, prompt: list[int], retention: str, tenant: str | None = None
) -> RequestOutput:
    from promptcache.cache.settings import CacheSettings, Retention
    from promptcache.engine.request import GenerationRequest

    settings = CacheSettings(tenant=tenant, retention=Retention(retention))
    rid = engine.submit(
        GenerationRequest(prompt, SamplingParams(max_tokens=6, temperature=0), settings)
    )
    return until_done(engine, rid)


def test_24h_prefix_evicted_from_the_pool_hits_from_host(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    a, b = random_tokens(1300, seed=40), random_tokens(1300, seed=41)
    off = make_engine(tiny_long, kv_cache_bytes=16 << 20, enable_prefix_caching=False)
    expected = _run(off, a, params=SamplingParams(max_tokens=6, temperature=0)).token_ids
    engine = _tiered(tiny_long, make_engine)  # 120 blocks: A (82) and B (82) don't both fit
    assert _run_with(engine, a, "24h").token_ids == expected
    _run_with(engine, b, "in_memory")  # evicts most of A: its 24h blocks go to host memory
    stats = engine.stats()
    assert stats["host_writes_total"] > 0 and stats["host_blocks"] == stats["host_writes_total"]
    again = _run_with(engine, a, "24h")
    assert again.usage.reused_tokens == 1296 and again.usage.cached_tokens == 1280
    assert again.token_ids == expected  # KV loaded back from host: identical float32 output
    stats = engine.stats()
    assert stats["host_loads_total"] > 0
    assert stats["prompt_tokens_reused_from_host"] == stats["host_loads_total"] * 16
    assert again.cache is not None  # the tier each reused token came from
    assert again.cache.reused_from_host == stats["prompt_tokens_reused_from_host"]
    engine.host.index.check_integrity()


def test_in_memory_blocks_are_just_dropped(tiny_long: LoadedModel, make_engine: Any) -> None:
    a, b = random_tokens(1300, seed=42), random_tokens(1300, seed=43)
    engine = _tiered(tiny_long, make_engine)
    _run_with(engine, a, "in_memory")
    _run_with(engine, b, "in_memory")
    assert engine.stats()["host_writes_total"] == 0
    assert _run_with(engine, a, "in_memory").usage.reused_tokens < 1296


def test_tenants_never_load_each_others_host_blocks(
    tiny_long: LoadedModel, make_engine: Any
) -> None:
    a, b = random_tokens(1300, seed=44), random_tokens(1300, seed=45)
    engine = _tiered(tiny_long, make_engine)
    _run_with(engine, a, "24h", tenant="tenant-a")
    _run_with(engine, b, "24h", tenant="tenant-a")  # pushes A's blocks to host
    assert engine.stats()["host_blocks"] > 0
    other = _run_with(engine, a, "24h", tenant="tenant-b")
    assert other.usage.reused_tokens == 0 and engine.stats()["host_loads_total"] == 0
    mine = _run_with(engine, a, "24h", tenant="tenant-a")
    assert mine.usage.reused_tokens == 1296 and engine.stats()["host_loads_total"] > 0
