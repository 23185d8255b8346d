"""Sampling (greedy, seeded, top-p), stop conditions, aborts and request validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from promptcache.engine.errors import RequestError
from promptcache.engine.sampler import _top_p, sample
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import LoadedModel
from promptcache.text.chat import chat_prompt_ids
from tests.helpers import run_to_end


def test_top_p_keeps_smallest_nucleus() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert torch.allclose(_top_p(probs.clone(), 0.8), torch.tensor([0.625, 0.375, 0.0, 0.0]))
    kept = _top_p(probs.clone(), 0.81)
    assert torch.allclose(kept, torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95)
    assert torch.equal(_top_p(probs.clone(), 0.1), torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_seeded_sampling_is_reproducible_and_batch_independent(
    tiny_llama: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(tiny_llama, block_size=4, kv_cache_bytes=1 << 20)
    params = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=42)
    alone = engine.generate(["hello"], params)[0].token_ids
    others = SamplingParams(max_tokens=16, temperature=1.0, seed=7)
    ids = [
        engine.add_request("abc", others),
        engine.add_request("hello", params),
        engine.add_request("xyz!", others),
    ]
    assert run_to_end(engine, ids)[1] == alone
    other_seed = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=43)
    assert engine.generate(["hello"], other_seed)[0].token_ids != alone


@pytest.fixture
def capital_prompt(bundled: LoadedModel) -> list[int]:
    return chat_prompt_ids(
        bundled.tokenizer, [{"role": "user", "content": "What is the capital of France?"}]
    )


def test_eos_stop_and_length(
    bundled: LoadedModel, capital_prompt: list[int], make_engine: Any
) -> None:
    engine = make_engine(bundled, kv_cache_bytes=64 << 20)
    full = engine.generate([capital_prompt], SamplingParams(max_tokens=40, temperature=0))[0]
    assert full.text == "The capital of France is Paris."
    assert full.finish_reason == "stop" and full.token_ids[-1] == 2  # <|im_end|>
    assert full.usage.prompt_tokens == len(capital_prompt)
    assert full.usage.completion_tokens == len(full.token_ids)
    assert full.usage.cached_tokens == 0
    short = engine.generate([capital_prompt], SamplingParams(max_tokens=3, temperature=0))[0]
    assert short.finish_reason == "length" and short.token_ids == full.token_ids[:3]


def test_stop_string_cuts_text(
    bundled: LoadedModel, capital_prompt: list[int], make_engine: Any
) -> None:
    engine = make_engine(bundled, kv_cache_bytes=64 << 20)
    params = SamplingParams(max_tokens=40, temperature=0, stop=(" Paris", "zzz"))
    out = engine.generate([capital_prompt], params)[0]
    assert out.text == "The capital of France is"
    assert out.finish_reason == "stop"


def test_abort_frees_blocks(tiny_llama: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_llama, block_size=4, kv_cache_bytes=1 << 20)
    rid = engine.add_request("a long enough prompt", SamplingParams(max_tokens=50))
    engine.step()
    engine.step()
    assert engine.pool.num_in_use > 0
    out = engine.abort(rid)
    assert out is not None and out.finished and out.finish_reason == "abort"
    assert engine.pool.num_in_use == 0 and not engine.has_unfinished()
    assert engine.abort(rid) is None


def test_request_validation(tiny_llama: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(tiny_llama, block_size=4, kv_cache_bytes=1 << 20)
    assert engine.max_model_len == 512
    with pytest.raises(RequestError, match="maximum context length is 512"):
        engine.add_request([1] * 500, SamplingParams(max_tokens=13))
    with pytest.raises(RequestError, match="maximum context length"):
        engine.add_request([1] * 512)
    with pytest.raises(RequestError, match="empty"):
        engine.add_request([])
    with pytest.raises(RequestError, match="token ids"):
        engine.add_request([300])
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    rid = engine.add_request([1] * 500, SamplingParams(max_tokens=12, temperature=0))
    with pytest.raises(RequestError, match="already running"):
        engine.add_request([1, 2], request_id=rid)
    engine.abort(rid)


@pytest.mark.parametrize("temperature", [1e-30, 1e-300, 5e-324])
def test_a_tiny_temperature_samples_the_argmax(temperature: float) -> None:
    """Found by the fuzz test: logits / 1e-300 overflowed to inf, softmax gave nan and
    torch.multinomial killed the engine thread."""
    logits = torch.tensor([[1.0, 3.0, -2.0, 3.0 - 1e-3], [0.5, -1.0, 7.0, 6.9]])
    params = [
        SamplingParams(temperature=temperature),
        SamplingParams(temperature=temperature, top_k=2),
    ]
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    assert sample(logits, params, gens) == [1, 2]


def test_a_tiny_top_p_keeps_the_most_likely_token() -> None:
    """Found by the fuzz test: top_p 5e-324 is 0 in float32 and dropped every token."""
    probs = torch.tensor([0.1, 0.6, 0.3])
    assert _top_p(probs, 5e-324).tolist() == [0.0, 1.0, 0.0]
