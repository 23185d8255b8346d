"""n > 1 through the official `openai` SDK against the in-process server: a seeded n = 3
Chat request gives three reproducible, distinct choices whose prompt was computed once
(the others reuse it) and counted once in usage and in the ledger; a stream interleaves
the choices by index and assembles to the same choices; Completions' prompts x n choices
come in order; forced tool calls in every choice; objects validate against OpenAI's
document."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import httpx

from tests.api.inprocess import MODEL, Running, wait_idle
from tests.api.test_openapi_schema import check

ASK = [
    {
        "role": "user",
        "content": "Write one short sentence about a lighthouse keeper and the sea at night.",
    }
]
SEEDED: dict[str, Any] = {"temperature": 1.0, "seed": 7, "max_tokens": 12}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def _records(running: Running, request_id: str) -> list[Any]:
    return [r for r in running.records if (r.request_id or "").startswith(request_id)]


def test_seeded_n3_reproducible_distinct_one_prefill(running: Running) -> None:
    client = running.client()
    first = client.chat.completions.create(model=MODEL, messages=ASK, n=3, **SEEDED)
    again = client.chat.completions.create(model=MODEL, messages=ASK, n=3, **SEEDED)
    texts = [c.message.content for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.message.content for c in again.choices]  # reproducible
    assert len(set(texts)) == 3  # seeds 7, 8, 9
    wait_idle(running)
    records = {r.request_id: r for r in _records(running, first.id)}
    assert set(records) == {first.id, f"{first.id}-1", f"{first.id}-2"}
    usage = first.usage
    assert usage is not None
    prompt = records[first.id].usage.prompt_tokens
    assert usage.prompt_tokens == prompt  # counted once
    assert usage.completion_tokens == sum(r.usage.completion_tokens for r in records.values())
    # One prefill: the other choices reuse every full block of it (all but its last part).
    full = (prompt - 1) // 16 * 16
    assert records[first.id].usage.reused_tokens == 0
    assert [records[f"{first.id}-{j}"].usage.reused_tokens for j in (1, 2)] == [full, full]
    rows = {r.request_id: r for r in running.ledger.rows() if r.request_id in records}
    assert rows[first.id].prompt_tokens == prompt
    assert rows[f"{first.id}-1"].prompt_tokens == rows[f"{first.id}-2"].prompt_tokens == 0
    assert rows[f"{first.id}-1"].output_tokens == records[f"{first.id}-1"].usage.completion_tokens


def _events(resp: httpx.Response) -> list[dict[str, Any]]:
    lines = [ln[6:] for ln in resp.text.splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(ln) for ln in lines[:-1]]


def test_stream_interleaves_choices_and_matches(running: Running) -> None:
    body = {"model": MODEL, "messages": ASK, "n": 2, **SEEDED}
    with httpx.Client(base_url=running.base_url, timeout=120) as http:
        whole = http.post("/v1/chat/completions", json=body).json()
        options = {"include_usage": True}
        resp = http.post(
            "/v1/chat/completions", json={**body, "stream": True, "stream_options": options}
        )
    check("CreateChatCompletionResponse", whole)
    chunks = _events(resp)
    for chunk in chunks:
        check("CreateChatCompletionStreamResponse", chunk)
    text: dict[int, str] = defaultdict(str)
    roles, finishes = [], []
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        text[choice["index"]] += choice["delta"].get("content") or ""
        if choice["delta"].get("role"):
            roles.append(choice["index"])
        if choice["finish_reason"]:
            finishes.append(choice["index"])
    assert roles == [0, 1] and sorted(finishes) == [0, 1]
    assert [text[0], text[1]] == [c["message"]["content"] for c in whole["choices"]]
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert usage[key] == whole["usage"][key]
    wait_idle(running)


def test_completions_prompts_times_n(running: Running) -> None:
    client = running.client()
    prompts = ["The capital of France is", "Once upon a time"]
    r = client.completions.create(model=MODEL, prompt=prompts, n=2, best_of=2, **SEEDED)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for i, prompt in enumerate(prompts):  # choice i * n + j is prompt i's j-th
        alone = client.completions.create(model=MODEL, prompt=prompt, n=2, **SEEDED)
        assert [c.text for c in r.choices[2 * i : 2 * i + 2]] == [c.text for c in alone.choices]
    tokenizer = running.engine.tokenizer
    assert r.usage is not None
    assert r.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in prompts)
    check("CreateCompletionResponse", r.model_dump(exclude_unset=True))
    wait_idle(running)


def test_forced_tool_call_in_every_choice(running: Running) -> None:
    client = running.client()
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,
        n=2,
        **SEEDED | {"max_tokens": 40},
    )
    assert len(r.choices) == 2
    for choice in r.choices:
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls or []
        assert len(calls) == 1 and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
        args = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
        assert args["city"] in {"Paris", "Oslo", "Lima"}
    wait_idle(running)
