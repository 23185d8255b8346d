"""The Responses API with tools and `text.format` through the official `openai` SDK on a
real server (bundled model, float32): `function_call` output items, their stream events
assembling to the same call, `parse()`, the refusals, and an agent loop carried by
`previous_response_id` whose every turn reuses the whole previous turn."""

from __future__ import annotations

import itertools
import json
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.api.helpers import MODEL, Server
from tests.api.tools_fixtures import CLOCK, CLOCK_SCHEMA, WEATHER, WEATHER_SCHEMA, many_tools

pytestmark = pytest.mark.server

ASK = "What is the weather in Paris?"
BLOCK = 16


def _tool(chat_tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", **chat_tool["function"]}


TOOLS = [_tool(WEATHER), _tool(CLOCK)]


def _create(server: Server, **kwargs: Any) -> Any:
    args = {"model": MODEL, "input": ASK, "temperature": 0, "max_output_tokens": 80, **kwargs}
    return server.client().responses.create(**args)


def _calls(response: Any) -> list[Any]:
    return [o for o in response.output if o.type == "function_call"]


def test_forced_calls_are_function_call_items(server: Server) -> None:
    out = _create(server, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    [call] = _calls(out)
    assert out.status == "completed" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    schema = WEATHER_SCHEMA if call.name == "get_weather" else CLOCK_SCHEMA
    jsonschema.validate(json.loads(call.arguments), schema)
    named = _create(server, tools=TOOLS, tool_choice={"type": "function", "name": "get_time"})
    assert {c.name for c in _calls(named)} == {"get_time"}
    assert named.tool_choice.name == "get_time" and len(named.tools) == 2
    limited = _create(server, tools=TOOLS, tool_choice="required", max_tool_calls=1)
    assert len(_calls(limited)) == 1 and limited.max_tool_calls == 1


def test_streamed_call_events_assemble_to_the_same_call(server: Server) -> None:
    whole = _create(server, tools=TOOLS, tool_choice="required")
    args: dict[str, str] = {}
    done: dict[str, Any] = {}
    final = None
    for event in _create(server, tools=TOOLS, tool_choice="required", stream=True):
        if event.type == "response.output_item.added" and event.item.type == "function_call":
            args[event.item.id] = ""
        elif event.type == "response.function_call_arguments.delta":
            args[event.item_id] += event.delta
        elif event.type == "response.function_call_arguments.done":
            assert event.arguments == args[event.item_id]
        elif event.type == "response.output_item.done" and event.item.type == "function_call":
            done[event.item.id] = event.item
        elif event.type == "response.completed":
            final = event.response
    assert final is not None and [c.id for c in _calls(final)] == list(done)
    assert [(c.name, c.arguments) for c in _calls(whole)] == [
        (c.name, args[c.id]) for c in done.values()
    ]


class Forecast(BaseModel):
    city: str
    sky: Literal["sunny", "cloudy", "rainy"]


def test_parse_with_a_text_format(server: Server) -> None:
    out = server.client().responses.parse(
        model=MODEL, input=ASK, text_format=Forecast, temperature=0, max_output_tokens=60
    )
    assert isinstance(out.output_parsed, Forecast)
    assert out.text.format.type == "json_schema"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        (
            {"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
            "input[0].call_id",
        ),
    ],
)
def test_refusals_name_the_field(server: Server, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _create(server, **kwargs)
    assert refused.value.param == param
    if "type" in param:
        assert kwargs["tools"][0]["type"] in refused.value.message


def test_an_agent_loop_over_previous_response_id_reuses_every_turn(server: Server) -> None:
    tools = [_tool(t) for t in many_tools()]
    client = server.client()
    kwargs = dict(model=MODEL, tools=tools, tool_choice="required", parallel_tool_calls=False)
    kwargs |= dict(temperature=0, max_output_tokens=80, instructions="You are agent 2.")
    out = client.responses.create(input=ASK, **kwargs)
    usages = [out.usage]
    for turn in range(3):
        [call] = _calls(out)
        result = {
            "type": "function_call_output",
            "call_id": call.call_id,
            "output": f"{20 + turn} C",
        }
        out = client.responses.create(previous_response_id=out.id, input=[result], **kwargs)
        usages.append(out.usage)
    assert usages[0].input_tokens > 1024
    for before, after in itertools.pairwise(usages):
        computed = before.input_tokens + before.output_tokens - 1
        reused = after.input_tokens_details.model_extra["reused_tokens"]
        assert reused == computed // BLOCK * BLOCK
        assert after.input_tokens_details.cached_tokens == reused // 128 * 128


def test_calls_sent_back_as_input_items_reuse_the_cache(server: Server) -> None:
    client = server.client()
    first = _create(
        server, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, store=False
    )
    [call] = _calls(first)
    items = [
        {"role": "user", "content": ASK},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "21 C"},
    ]
    second = client.responses.create(
        model=MODEL, input=items, tools=TOOLS, temperature=0, max_output_tokens=4
    )
    computed = first.usage.input_tokens + first.usage.output_tokens - 1
    reused = second.usage.input_tokens_details.model_extra["reused_tokens"]
    assert reused == computed // BLOCK * BLOCK
