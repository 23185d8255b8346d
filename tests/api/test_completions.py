"""`POST /v1/completions` through the official `openai` SDK against the in-process server:
text and token-id prompts (one choice each, in order), `echo` with prompt logprobs equal to
a float32 forward's, a second long prompt reported as cached, streaming with usage, the
ledger's rows, the response validated against OpenAI's schema, and every refused value a
400 naming its field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import torch

from promptcache.engine.llm_engine import LLMEngine
from promptcache.model.loading.loader import LoadedModel
from tests.api.inprocess import MODEL, Running, wait_idle
from tests.api.test_openapi_schema import check

DOC = "Lichens are a partnership of a fungus and an alga, growing on bark and stone. " * 70


@pytest.fixture
def reference(bundled: LoadedModel, make_engine: Callable[..., LLMEngine]) -> LLMEngine:
    return make_engine(bundled, kv_cache_bytes=16 << 20)


def test_text_and_token_prompts_are_choices_in_order(
    running: Running, reference: LLMEngine
) -> None:
    client = running.client()
    ids = reference.tokenizer.encode("The capital of France is")
    one = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert one.object == "text_completion" and len(one.choices) == 1
    assert one.usage is not None and one.usage.prompt_tokens == len(ids)
    assert one.usage.completion_tokens == 5 and one.choices[0].finish_reason == "length"
    greedy = reference.generate([ids], _greedy(5))[0]
    assert one.choices[0].text == greedy.text
    many = client.completions.create(
        model=MODEL,
        prompt=[ids, reference.tokenizer.encode("Two plus two")],
        max_tokens=5,
        temperature=0,
    )
    assert [c.index for c in many.choices] == [0, 1]
    assert many.choices[0].text == one.choices[0].text
    assert many.usage is not None and many.usage.completion_tokens == 10
    default = client.completions.create(model=MODEL, prompt="Once upon a time")
    assert default.usage is not None and default.usage.completion_tokens <= 16  # OpenAI's default
    wait_idle(running)


def _greedy(n: int) -> Any:
    from promptcache.engine.sampling_params import SamplingParams

    return SamplingParams(temperature=0, max_tokens=n)


def test_echo_logprobs_equal_forward(running: Running, reference: LLMEngine) -> None:
    client = running.client()
    text = "Lichens grow on bark and stone."
    ids = reference.tokenizer.encode(text)
    # as an evaluation harness scores log-likelihood: token ids, echo, 1 token, logprobs 1
    r = client.completions.create(
        model=MODEL, prompt=[ids], max_tokens=1, temperature=0, echo=True, logprobs=1
    )
    lp = r.choices[0].logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert r.choices[0].text.startswith(text)
    assert len(lp.tokens) == len(ids) + 1 and lp.token_logprobs[0] is None
    assert lp.top_logprobs is not None and lp.top_logprobs[0] is None
    ref = torch.log_softmax(reference.prompt_logits(ids), -1)
    want = ref[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].tolist()
    got = lp.token_logprobs[1 : len(ids)]
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4  # type: ignore[operator]
    assert "".join(lp.tokens[: len(ids)]) == text
    assert lp.text_offset is not None and lp.text_offset[:2] == [0, len(lp.tokens[0])]
    for i, top in enumerate(lp.top_logprobs[1 : len(ids)]):  # the most likely, by the forward
        assert top is not None and len(top) == 1
        best = int(ref[i].argmax())
        assert list(top) == [reference.tokenizer.decode([best])]
    wait_idle(running)


def test_second_long_prompt_is_cached_and_booked(running: Running) -> None:
    client = running.client()
    first = client.completions.create(model=MODEL, prompt=DOC, max_tokens=2, temperature=0)
    second = client.completions.create(model=MODEL, prompt=DOC, max_tokens=2, temperature=0)
    assert first.usage is not None and second.usage is not None
    prompt = first.usage.prompt_tokens
    assert prompt > 1024 and first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == (prompt - 1) // 128 * 128
    wait_idle(running)
    rows = [r for r in running.ledger.rows() if r.endpoint == "completions"]
    assert (
        len(rows) == 2 and rows[1].cached_tokens == second.usage.prompt_tokens_details.cached_tokens
    )


def test_stream_with_usage(running: Running) -> None:
    client = running.client()
    kw: dict[str, Any] = {"model": MODEL, "prompt": "Two plus two is", "temperature": 0}
    final = client.completions.create(**kw, max_tokens=6, logprobs=2)
    text, tokens, finish, usage = "", [], None, None
    stream = client.completions.create(
        **kw, max_tokens=6, logprobs=2, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        for c in chunk.choices:
            text += c.text
            tokens += (c.logprobs.tokens or []) if c.logprobs else []
            finish = c.finish_reason or finish
        usage = chunk.usage or usage
    assert text == final.choices[0].text and finish == final.choices[0].finish_reason
    assert final.choices[0].logprobs is not None and tokens == final.choices[0].logprobs.tokens
    assert usage is not None and usage.completion_tokens == 6
    wait_idle(running)


def test_vllm_extensions_of_load_generators(running: Running) -> None:
    """What load generators send to vLLM (GuideLLM, for one): `ignore_eos` to fixed-length
    outputs, and `continuous_usage_stats`: the usage so far on every chunk."""
    client = running.client()
    eos = running.engine.tokenizer.eos_token_id
    kw: dict[str, Any] = {"model": MODEL, "prompt": "Hi", "max_tokens": 24, "temperature": 0}
    # logit_bias forces EOS as the first token: without ignore_eos it stops at once
    forced = {**kw, "logit_bias": {str(eos): 100}}
    assert client.completions.create(**forced).usage.completion_tokens == 1
    body = {**forced, "ignore_eos": True}
    assert client.completions.create(extra_body=body, **forced).usage.completion_tokens == 24
    options = {"include_usage": True, "continuous_usage_stats": True}
    stream = client.completions.create(
        **kw, stream=True, stream_options=options, extra_body={"ignore_eos": True}
    )
    counts = [c.usage.completion_tokens for c in stream if c.choices and c.usage]
    assert counts == sorted(counts) and counts[-1] == 24 and len(counts) >= 2
    wait_idle(running)


def test_response_validates_against_openai_schema(running: Running) -> None:
    url = f"{running.base_url}/v1/completions"
    body = {"model": MODEL, "prompt": ["a b c", "d e"], "max_tokens": 3, "logprobs": 2}
    got = httpx.post(url, json=body, timeout=60)
    assert got.status_code == 200 and len(got.json()["choices"]) == 2
    check("CreateCompletionResponse", got.json())
    # echo: the first prompt token has no logprob, null as OpenAI's API returns it (the
    # published schema has no null there); the rest validates as it stands
    echoed = httpx.post(url, json={**body, "echo": True}, timeout=60).json()
    for choice in echoed["choices"]:
        lp = choice["logprobs"]
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
            lp[key] = lp[key][1:]
    check("CreateCompletionResponse", echoed)
    streamed = httpx.post(url, json={**body, "stream": True}, timeout=60)
    chunks = [
        json.loads(line[6:])
        for line in streamed.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}
    # the schema has no null finish_reason, which every chunk but a choice's last carries
    last = [c for c in chunks if c["choices"][0]["finish_reason"] is not None]
    assert len(last) == 2
    for chunk in last:
        check("CreateCompletionResponse", chunk)
    assert all(set(c) == set(last[0]) for c in chunks)
    wait_idle(running)


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"suffix": "end"}, "suffix", "unsupported_value"),
        ({"n": 129}, "n", "invalid_value"),
        ({"n": 100, "prompt": ["a", "b"]}, "n", "invalid_value"),
        ({"n": 2, "best_of": 3}, "best_of", "unsupported_value"),
        ({"best_of": 3}, "best_of", "unsupported_value"),
        ({"max_tokens": 0}, "max_tokens", "unsupported_value"),
        ({"logprobs": 6}, "logprobs", "invalid_value"),
        ({"prompt": []}, "prompt", None),
        ({"prompt": [[1, 2], [99999999]]}, "prompt", None),
        ({"prompt": ""}, "prompt", None),
        ({"logit_bias": {"a": 1}}, "logit_bias", "invalid_value"),
        ({"stream_options": {"include_usage": True}}, "stream_options", None),
        ({"bogus": True}, "bogus", "unknown_parameter"),
    ],
)
def test_refused_values_name_their_field(
    running: Running, extra: dict[str, Any], param: str, code: str | None
) -> None:
    client = running.client()
    body: dict[str, Any] = {"model": MODEL, "prompt": "hello", "max_tokens": 2, **extra}
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(
            **{k: v for k, v in body.items() if k != "bogus"},
            extra_body={"bogus": True} if "bogus" in body else None,
        )
    error = err.value.body
    assert isinstance(error, dict) and error["param"] == param
    if code is not None:
        assert error["code"] == code


def test_a_refused_prompt_stops_the_ones_before_it(running: Running) -> None:
    """Prompts are submitted in turn: when a later one is refused (here too long), the
    ones already queued are aborted, not left to run to the end unread."""
    wait_idle(running)
    before = len(running.ledger.rows())
    client = running.client()
    too_long = [1] * 4000
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt=[[2, 3, 4], too_long], max_tokens=400)
    assert err.value.body is not None and err.value.body.get("param") == "prompt"
    wait_idle(running)
    rows = running.ledger.rows()[before:]
    first = [r for r in rows if r.request_id and r.request_id.endswith("-0")]
    assert [r.outcome for r in first] == ["aborted"]
    assert first[0].output_tokens < 400
