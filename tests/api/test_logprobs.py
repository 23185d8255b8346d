"""Logprobs, penalties and `logit_bias` through the official `openai` SDK against the
in-process server: Chat and Responses top logprobs equal a float32 forward's log-softmax
(greedy), streamed logprobs equal the final ones, a frequency penalty changes a repetitive
greedy output exactly as computed by hand, and a -100 bias bans a token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from promptcache.engine.llm_engine import LLMEngine
from promptcache.model.loading.loader import LoadedModel
from promptcache.text.chat import chat_prompt_ids
from promptcache.text.token_bytes import TokenBytes
from tests.api.inprocess import MODEL, Running, wait_idle

ASK = [{"role": "user", "content": "Name three colours of the rainbow."}]
REPEAT = [{"role": "user", "content": "Say 'la' twenty times: la la la la la la"}]


@pytest.fixture
def reference(bundled: LoadedModel, make_engine: Callable[..., LLMEngine]) -> LLMEngine:
    """A second engine on the same weights, for plain forwards."""
    return make_engine(bundled, kv_cache_bytes=16 << 20)


def _prompt(engine: LLMEngine, messages: list[dict[str, str]]) -> list[int]:
    return chat_prompt_ids(engine.tokenizer, messages)


def _greedy_ids(reported: list[bytes], engine: LLMEngine) -> list[int]:
    """Token ids from the reported bytes (the first vocabulary entry with those bytes)."""
    tb = TokenBytes(engine.tokenizer)
    by_bytes: dict[bytes, int] = {}
    for i in range(len(engine.tokenizer)):
        by_bytes.setdefault(tb.bytes_of(i), i)
    return [by_bytes[raw] for raw in reported]


def test_chat_top_logprobs_equal_forward_log_softmax(
    running: Running, reference: LLMEngine
) -> None:
    client = running.client()
    r = client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0, max_tokens=6, logprobs=True, top_logprobs=5
    )
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == r.usage.completion_tokens  # type: ignore[union-attr]
    assert "".join(c.token for c in content) == r.choices[0].message.content
    prompt = _prompt(reference, ASK)
    ids = _greedy_ids([bytes(c.bytes or []) for c in content], reference)
    for i, entry in enumerate(content):
        ref = torch.log_softmax(reference.prompt_logits(prompt + ids[:i])[-1], -1)
        values, top = ref.topk(5)
        assert abs(entry.logprob - float(ref[ids[i]])) < 1e-4
        assert len(entry.top_logprobs) == 5
        assert entry.top_logprobs[0].token == entry.token  # greedy takes the most likely
        for got, want in zip(entry.top_logprobs, values.tolist(), strict=True):
            assert abs(got.logprob - want) < 1e-4
        top_text = [reference.tokenizer.decode([t]) for t in top.tolist()]
        assert [t.token for t in entry.top_logprobs] == top_text
    plain = client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=6)
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == r.choices[0].message.content


def test_streamed_logprobs_equal_final(running: Running) -> None:
    client = running.client()
    kw: dict[str, Any] = {"model": MODEL, "messages": ASK, "temperature": 0, "max_tokens": 8}
    final = client.chat.completions.create(**kw, logprobs=True, top_logprobs=2)
    streamed: list[Any] = []
    text = ""
    for chunk in client.chat.completions.create(**kw, logprobs=True, top_logprobs=2, stream=True):
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        if choice.logprobs is not None and choice.logprobs.content:
            streamed.extend(choice.logprobs.content)
    assert text == final.choices[0].message.content
    want = final.choices[0].logprobs.content  # type: ignore[union-attr]
    assert [(e.token, e.bytes) for e in streamed] == [(e.token, e.bytes) for e in want or []]
    assert all(abs(a.logprob - b.logprob) < 1e-5 for a, b in zip(streamed, want or [], strict=True))


def test_responses_include_logprobs(running: Running) -> None:
    client = running.client()
    kw: dict[str, Any] = {"model": MODEL, "input": ASK, "temperature": 0, "max_output_tokens": 6}
    r = client.responses.create(**kw, top_logprobs=3, include=["message.output_text.logprobs"])
    part = r.output[0].content[0]  # type: ignore[union-attr]
    assert part.type == "output_text"
    assert part.logprobs and len(part.logprobs) == 6
    assert "".join(lp.token for lp in part.logprobs) == part.text
    assert all(len(lp.top_logprobs) == 3 for lp in part.logprobs)
    plain = client.responses.create(**kw, include=[], tools=[])  # the Agents SDK's defaults
    assert plain.output[0].content[0].logprobs == []  # type: ignore[union-attr]
    assert plain.output_text == r.output_text


def _by_hand(engine: LLMEngine, prompt: list[int], n: int, freq: float) -> list[int]:
    out: list[int] = []
    for _ in range(n):
        logits = engine.prompt_logits(prompt + out)[-1].clone()
        counts = torch.bincount(torch.tensor(out, dtype=torch.long), minlength=logits.shape[0])
        out.append(int((logits - freq * counts).argmax()))
    return out


def test_frequency_penalty_as_by_hand(running: Running, reference: LLMEngine) -> None:
    client = running.client()
    kw: dict[str, Any] = {"model": MODEL, "messages": REPEAT, "temperature": 0, "max_tokens": 10}
    plain = client.chat.completions.create(**kw).choices[0].message.content
    penalized = client.chat.completions.create(**kw, frequency_penalty=1.2).choices[0]
    assert penalized.message.content != plain
    want = _by_hand(reference, _prompt(reference, REPEAT), 10, 1.2)
    eos = reference.tokenizer.eos_token_id
    want = want[: want.index(eos)] if eos in want else want
    assert penalized.message.content == reference.tokenizer.decode(want)


def test_logit_bias_minus_100_bans_a_token(running: Running, reference: LLMEngine) -> None:
    client = running.client()
    kw: dict[str, Any] = {"model": MODEL, "messages": ASK, "temperature": 0, "max_tokens": 6}
    first = client.chat.completions.create(**kw, logprobs=True).choices[0]
    banned = _greedy_ids([bytes(first.logprobs.content[0].bytes or [])], reference)[0]  # type: ignore[union-attr, index]
    out = client.chat.completions.create(**kw, logprobs=True, logit_bias={str(banned): -100})
    ids = _greedy_ids(
        [bytes(c.bytes or []) for c in out.choices[0].logprobs.content or []],  # type: ignore[union-attr]
        reference,
    )
    assert banned not in ids
    wait_idle(running)
