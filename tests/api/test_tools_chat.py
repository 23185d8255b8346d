"""Chat Completions with tools and structured outputs through the official `openai` SDK on
a real server (bundled model, float32): forced calls valid against their schemas, streamed
calls assembling to the non-streamed one, `parse()`, JSON schema answers, the 400s, an
agent loop whose every turn reuses the whole previous turn, and the tools as cached prefix."""

from __future__ import annotations

import itertools
import json
from typing import Any, Literal

import httpx
import jsonschema
import pytest
from pydantic import BaseModel

from promptcache.text.tools import is_json
from tests.api.helpers import MODEL, Server
from tests.api.tools_fixtures import CLOCK, CLOCK_SCHEMA, WEATHER, WEATHER_SCHEMA, many_tools

pytestmark = pytest.mark.server

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
NAMED = {"type": "function", "function": {"name": "get_time"}}
BLOCK = 16


def _create(server: Server, **kwargs: Any) -> Any:
    args = {"model": MODEL, "messages": ASK, "temperature": 0, "max_tokens": 80, **kwargs}
    return server.client().chat.completions.create(**args)


def test_required_and_named_calls_validate(server: Server) -> None:
    out = _create(server, tools=[WEATHER, CLOCK], tool_choice="required", parallel_tool_calls=False)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    schema = WEATHER_SCHEMA if call.function.name == "get_weather" else CLOCK_SCHEMA
    jsonschema.validate(json.loads(call.function.arguments), schema)
    named = _create(server, tools=[WEATHER, CLOCK], tool_choice=NAMED)
    calls = named.choices[0].message.tool_calls
    assert calls and {c.function.name for c in calls} == {"get_time"}
    for c in calls:
        jsonschema.validate(json.loads(c.function.arguments), CLOCK_SCHEMA)


def test_streamed_calls_assemble_to_the_same_call(server: Server) -> None:
    whole = _create(server, tools=[WEATHER, CLOCK], tool_choice="required")
    stream = _create(server, tools=[WEATHER, CLOCK], tool_choice="required", stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for piece in choice.delta.tool_calls or []:
            if piece.id is not None:
                assert piece.index not in calls and piece.function.arguments == ""
                calls[piece.index] = {"name": piece.function.name, "arguments": ""}
            else:
                calls[piece.index]["arguments"] += piece.function.arguments
    expected = [
        {"name": c.function.name, "arguments": c.function.arguments}
        for c in whole.choices[0].message.tool_calls
    ]
    assert [calls[i] for i in sorted(calls)] == expected and finish == "tool_calls"


class Forecast(BaseModel):
    city: str
    sky: Literal["sunny", "cloudy", "rainy"]
    windy: bool


def test_parse_with_a_pydantic_model(server: Server) -> None:
    out = server.client().chat.completions.parse(
        model=MODEL, messages=ASK, response_format=Forecast, temperature=0, max_tokens=80
    )
    parsed = out.choices[0].message.parsed
    assert isinstance(parsed, Forecast)
    assert Forecast.model_validate_json(out.choices[0].message.content) == parsed


def test_json_schema_and_json_object_answers(server: Server) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER_SCHEMA}}
    out = _create(server, response_format=fmt)
    jsonschema.validate(json.loads(out.choices[0].message.content), WEATHER_SCHEMA)
    out = _create(server, response_format={"type": "json_object"}, max_tokens=200)
    assert isinstance(json.loads(out.choices[0].message.content), dict)


def test_a_cut_short_call_ends_with_length(server: Server) -> None:
    out = _create(server, tools=[WEATHER], tool_choice="required", max_tokens=22)
    choice = out.choices[0]
    assert choice.finish_reason == "length"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert out.usage.completion_tokens == 22
    assert call.function.arguments and not is_json(call.function.arguments)


def _error(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": ASK, **body},
        headers={"Authorization": "Bearer sk-tenant-a"},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    return dict(r.json()["error"])


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [WEATHER], "tool_choice": NAMED}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1]"),
        (
            {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]},
            "messages[1].tool_call_id",
        ),
        (
            {
                "messages": [
                    *ASK,
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "function": {"name": "f", "arguments": "{"}}],
                    },
                ]
            },
            "messages[1].tool_calls[0]",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "minProperties": "two"},
                    },
                }
            },
            "response_format",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "object", "required": 3}},
                    }
                ],
                "tool_choice": "required",
            },
            "tools[0]",
        ),
    ],
)
def test_inconsistent_requests_are_400s_naming_the_field(
    server: Server, body: dict[str, Any], param: str
) -> None:
    assert _error(server, body)["param"] == param


def test_unknown_tool_types_are_refused(server: Server) -> None:
    error = _error(server, {"tools": [{"type": "web_search"}]})
    assert "tools" in (error["param"] or "") or "web_search" in error["message"]


def _loop(server: Server, tools: list[dict[str, Any]], system: str, turns: int = 4) -> list[Any]:
    """An agent loop: every turn a forced call, its result sent back; the usages."""
    client = server.client()
    messages: list[Any] = [{"role": "system", "content": system}, *ASK]
    usages = []
    for turn in range(turns):
        out = client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=tools,
            tool_choice="required",
            parallel_tool_calls=False,
            temperature=0,
            max_tokens=80,
        )
        usages.append(out.usage)
        message = out.choices[0].message
        messages.append(message)
        for call in message.tool_calls:
            result = json.dumps({"temperature": 20 + turn, "sky": "clear"})
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return usages


def test_every_turn_of_an_agent_loop_reuses_the_whole_previous_turn(server: Server) -> None:
    usages = _loop(server, many_tools(), "You are agent 1 of the weather desk.")
    assert usages[0].prompt_tokens > 1024
    for before, after in itertools.pairwise(usages):
        # the previous prompt and output, but its last token (sampled, never computed)
        computed = before.prompt_tokens + before.completion_tokens - 1
        reused = after.prompt_tokens_details.reused_tokens
        assert reused == computed // BLOCK * BLOCK
        assert after.prompt_tokens_details.cached_tokens == reused // 128 * 128


def test_a_long_tool_list_is_a_cached_prefix_in_any_key_order(server: Server) -> None:
    tools = many_tools()
    ask = lambda q: [{"role": "user", "content": q}]  # noqa: E731
    client = server.client()
    first = client.chat.completions.create(
        model=MODEL, messages=ask("Weather in Rome?"), tools=tools, temperature=0, max_tokens=4
    )
    assert first.usage.prompt_tokens > 1024
    reordered = [_reversed_keys(t) for t in tools]
    second = client.chat.completions.create(
        model=MODEL, messages=ask("Time in Tokyo?"), tools=reordered, temperature=0, max_tokens=4
    )
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= 1024 and cached >= (first.usage.prompt_tokens - 64) // 128 * 128


def _reversed_keys(value: Any, keep: bool = False) -> Any:
    """Every object's keys reversed, but a schema's properties (their order is meaning)."""
    if isinstance(value, dict):
        keys = list(value) if keep else list(reversed(list(value)))
        return {k: _reversed_keys(value[k], k == "properties" and not keep) for k in keys}
    return value


def test_grammar_compiles_and_hits_are_in_metrics(server: Server) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": CLOCK_SCHEMA}}
    _create(server, response_format=fmt, max_tokens=2)
    _create(server, response_format=fmt, max_tokens=2)
    text = httpx.get(f"{server.base_url}/metrics", timeout=30).text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("promptcache_grammar_")
    }
    assert values["promptcache_grammar_compiles_total"] >= 1
    assert values["promptcache_grammar_cache_hits_total"] >= 1
    assert values["promptcache_grammar_compile_seconds_total"] > 0
