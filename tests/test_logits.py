"""Logit processing and logprobs in the engine: `logit_bias`, presence and frequency
penalties (checked against the same arithmetic done by hand on the model's logits), the
logprobs of sampled tokens and of prompt tokens (against a plain forward's log-softmax),
and that a request asking for prompt logprobs computes its whole prompt."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from promptcache.engine.logits import TokenCounts, adjust
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import LoadedModel


class _Row:
    def __init__(self, params: SamplingParams, output: list[int]) -> None:
        self.params, self.output_token_ids = params, output
        self.counts: TokenCounts | None = None
        self.earlier_output: list[int] = []


def test_adjust_bias_and_penalties_batched() -> None:
    logits = torch.zeros(3, 6)
    rows = [
        _Row(SamplingParams(logit_bias=((1, 5.0), (4, -100.0))), [2]),
        _Row(SamplingParams(), [1, 1]),  # untouched
        _Row(SamplingParams(frequency_penalty=0.5, presence_penalty=1.0), [3, 3, 5]),
    ]
    adjust(logits, rows)
    assert logits[0].tolist() == [0, 5, 0, 0, -100, 0]
    assert logits[1].tolist() == [0] * 6
    assert logits[2].tolist() == [0, 0, 0, -2.0, 0, -1.5]
    rows[2].output_token_ids.append(0)  # counts follow the output one step at a time
    logits = torch.zeros(3, 6)
    adjust(logits, rows)
    assert logits[2].tolist() == [-1.5, 0, 0, -2.0, 0, -1.5]
    assert rows[0].counts is None  # no penalty: no counts kept


def test_a_resumed_requests_earlier_output_counts_for_penalties() -> None:
    penalties = SamplingParams(frequency_penalty=0.5, presence_penalty=1.0)
    rows = [_Row(penalties, [3]), _Row(penalties, [])]
    rows[0].earlier_output, rows[1].earlier_output = [3, 5], [4]
    logits = torch.zeros(2, 6)
    adjust(logits, rows)
    assert logits[0].tolist() == [0, 0, 0, -2.0, 0, -1.5]  # token 3: once before, once now
    assert logits[1].tolist() == [0, 0, 0, 0, -1.5, 0]


def test_params_limits() -> None:
    for bad in (
        {"presence_penalty": 2.5},
        {"frequency_penalty": -3},
        {"logit_bias": ((1, 101.0),)},
        {"logprobs": 21},
        {"prompt_logprobs": -1},
    ):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


def _greedy_by_hand(
    engine: Any, prompt: list[int], n: int, freq: float, pres: float, bias: dict[int, float]
) -> list[int]:
    """Greedy decoding with penalties and bias applied to a plain forward's logits."""
    out: list[int] = []
    for _ in range(n):
        logits = engine.prompt_logits(prompt + out)[-1].clone()
        for t, b in bias.items():
            logits[t] += b
        counts = torch.bincount(torch.tensor(out, dtype=torch.long), minlength=logits.shape[0])
        logits -= freq * counts + pres * (counts > 0).float()
        out.append(int(logits.argmax()))
    return out


def test_frequency_penalty_changes_greedy_output_as_by_hand(
    bundled: LoadedModel, make_engine: Any
) -> None:
    engine = make_engine(bundled, kv_cache_bytes=16 << 20)
    prompt = engine.tokenizer.encode("one one one one one one one one", add_special_tokens=False)
    plain = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=12))[0]
    p = SamplingParams(temperature=0, max_tokens=12, frequency_penalty=1.5, presence_penalty=0.5)
    penalized = engine.generate([prompt], p)[0]
    assert penalized.token_ids != plain.token_ids
    assert penalized.token_ids == _greedy_by_hand(engine, prompt, 12, 1.5, 0.5, {})


def test_logit_bias_bans_and_forces(bundled: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(bundled, kv_cache_bytes=16 << 20)
    prompt = engine.tokenizer.encode("The capital of France is", add_special_tokens=False)
    plain = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=6))[0].token_ids
    banned = SamplingParams(temperature=0, max_tokens=6, logit_bias=((plain[0], -100.0),))
    out = engine.generate([prompt], banned)[0].token_ids
    assert plain[0] not in out
    assert out == _greedy_by_hand(engine, prompt, 6, 0, 0, {plain[0]: -100.0})
    forced = SamplingParams(temperature=0.8, seed=1, max_tokens=4, logit_bias=((42, 100.0),))
    assert engine.generate([prompt], forced)[0].token_ids == [42] * 4


def test_logprobs_equal_log_softmax_of_forward(bundled: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(bundled, kv_cache_bytes=16 << 20)
    prompt = engine.tokenizer.encode("Lichens grow on bark and", add_special_tokens=False)
    out = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=5, logprobs=5))[0]
    assert len(out.logprobs) == 5
    for i, lp in enumerate(out.logprobs):
        ref = torch.log_softmax(engine.prompt_logits(prompt + out.token_ids[:i])[-1], -1)
        assert lp.token_id == out.token_ids[i]
        assert abs(lp.logprob - float(ref[lp.token_id])) < 1e-4
        values, ids = ref.topk(5)
        assert [t for t, _ in lp.top] == ids.tolist()
        assert max(abs(v - r) for (_, v), r in zip(lp.top, values.tolist(), strict=True)) < 1e-4
        assert lp.top[0][0] == lp.token_id  # greedy takes the most likely
    # at temperature T the sampled distribution is log-softmax(logits / T)
    hot = SamplingParams(temperature=0.5, seed=3, max_tokens=3, logprobs=0)
    warm = engine.generate([prompt], hot)[0]
    for i, lp in enumerate(warm.logprobs):
        logits = engine.prompt_logits(prompt + warm.token_ids[:i])[-1]
        ref = torch.log_softmax(logits / 0.5, -1)
        assert abs(lp.logprob - float(ref[lp.token_id])) < 1e-4 and lp.top == ()
    none = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=3))[0]
    assert none.logprobs == [] and none.token_ids == out.token_ids[:3]


def test_prompt_logprobs_computed_whole_prompt(bundled: LoadedModel, make_engine: Any) -> None:
    engine = make_engine(bundled, kv_cache_bytes=16 << 20)
    words = "Field guide: lichens grow on bark and stone, each a fungus with an alga. " * 6
    prompt = engine.tokenizer.encode(words, add_special_tokens=False)
    engine.generate([prompt], SamplingParams(temperature=0, max_tokens=1))  # cache it
    p = SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=2)
    out = engine.generate([prompt], p)[0]
    assert out.usage.reused_tokens == 0 and out.cache is not None
    assert out.cache.reason == "not_read"
    ref = torch.log_softmax(engine.prompt_logits(prompt), -1)
    assert [x.token_id for x in out.prompt_logprobs] == prompt[1:]
    got = torch.tensor([x.logprob for x in out.prompt_logprobs])
    want = ref[torch.arange(len(prompt) - 1), torch.tensor(prompt[1:])]
    assert torch.allclose(got, want, atol=1e-4)
    assert all(len(x.top) == 2 for x in out.prompt_logprobs)
    again = engine.generate([prompt], SamplingParams(temperature=0, max_tokens=1))[0]
    assert again.usage.reused_tokens > 0  # it still reads for others
