"""Continuous batching and preemption never change greedy outputs."""

from __future__ import annotations

from typing import Any

from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import LoadedModel
from promptcache.text.chat import chat_prompt_ids
from tests.helpers import run_to_end

GREEDY = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain overfitting in machine learning in two sentences, with an example.",
    "List three prime numbers.",
    "Why is the sky blue? Answer like a pirate would, and keep it short please.",
]


def _prompts(model: LoadedModel) -> list[list[int]]:
    return [chat_prompt_ids(model.tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


def test_batch_equals_each_prompt_alone(bundled: LoadedModel, make_engine: Any) -> None:
    prompts = _prompts(bundled)
    assert len({len(p) for p in prompts}) == len(prompts)  # all lengths differ
    engine = make_engine(bundled, kv_cache_bytes=256 << 20)
    alone = [engine.generate([p], GREEDY)[0].token_ids for p in prompts]
    together = [o.token_ids for o in engine.generate(prompts, GREEDY)]
    assert together == alone
    assert all(len(t) == 24 for t in together)


def test_chunked_prefill_mixed_with_decodes(bundled: LoadedModel, make_engine: Any) -> None:
    prompts = _prompts(bundled)
    reference = make_engine(bundled, kv_cache_bytes=256 << 20).generate(prompts, GREEDY)
    # A 16-token step budget forces prompts into chunks that share steps with decodes.
    engine = make_engine(bundled, kv_cache_bytes=256 << 20, max_num_batched_tokens=16)
    plans = _record_plans(engine)
    ids = [engine.add_request(p, GREEDY) for p in prompts[:2]]
    for _ in range(5):
        engine.step()
    ids += [engine.add_request(p, GREEDY) for p in prompts[2:]]  # join mid-flight
    outputs = run_to_end(engine, ids)
    assert all(tokens <= 16 for tokens, _, _ in plans)
    assert any(decodes and prefills for _, decodes, prefills in plans)
    assert outputs == [r.token_ids for r in reference]


def _record_plans(engine: Any) -> list[tuple[int, int, int]]:
    """Wrap the scheduler to record (tokens, decodes, prefill chunks) of every step."""
    plans: list[tuple[int, int, int]] = []
    schedule = engine.scheduler.schedule

    def recording() -> Any:
        out = schedule()
        decodes = sum(s.seq.is_decoding for s in out.scheduled)
        plans.append((out.num_tokens, decodes, len(out.scheduled) - decodes))
        return out

    engine.scheduler.schedule = recording
    return plans


def test_preemption_keeps_outputs(bundled: LoadedModel, make_engine: Any) -> None:
    prompts = _prompts(bundled)
    reference = make_engine(bundled, kv_cache_bytes=256 << 20).generate(prompts, GREEDY)
    # 23,040 bytes/token in float32: 8 blocks of 16 tokens hold ~128 tokens in all, so the
    # five sequences (~40-60 tokens each + 24 generated) cannot all stay resident.
    per_block = 16 * bundled.spec.kv_bytes_per_token * 4
    engine = make_engine(bundled, kv_cache_bytes=8 * per_block)
    assert engine.pool.num_blocks == 8
    ids = [engine.add_request(p, GREEDY) for p in prompts]
    outputs = run_to_end(engine, ids)
    assert engine.num_preemptions > 0
    assert outputs == [r.token_ids for r in reference]
