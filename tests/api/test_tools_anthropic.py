"""Anthropic's Messages API with tools through the official `anthropic` SDK (in-process
server, bundled model, float32): forced `tool_use` blocks valid against their schemas,
streamed `input_json_delta` pieces assembling to the same input, the refusals, a tools
`cache_control` breakpoint, and an agent loop whose every turn reads the previous one."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest

from promptcache.config import EngineConfig
from promptcache.model.loading.loader import LoadedModel
from promptcache.text.chat import render_chat
from tests.api.inprocess import MODEL, Running, serve_in_process
from tests.api.test_anthropic import check
from tests.api.tools_fixtures import CLOCK, WEATHER, WEATHER_SCHEMA, many_tools

pytestmark = pytest.mark.server

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
AUTO_CACHE: Any = {"type": "ephemeral"}


@pytest.fixture
def roomy(bundled: LoadedModel, tmp_path: Path) -> Iterator[Running]:
    """The in-process server with room for a 24-tool agent loop."""
    yield from serve_in_process(bundled, tmp_path, EngineConfig(kv_cache_bytes=320 << 20))


def _tool(chat_tool: dict[str, Any], **extra: Any) -> dict[str, Any]:
    f = chat_tool["function"]
    return {
        "name": f["name"],
        "description": f["description"],
        "input_schema": f["parameters"],
        **extra,
    }


TOOLS = [_tool(WEATHER), _tool(CLOCK)]


def _client(running: Running) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.base_url, api_key="k", max_retries=0)


def _create(running: Running, **kw: Any) -> Any:
    kw.setdefault("max_tokens", 80)
    kw.setdefault("messages", ASK)
    return _client(running).messages.create(model=MODEL, extra_body={"temperature": 0}, **kw)


def _uses(message: Any) -> list[Any]:
    return [b for b in message.content if b.type == "tool_use"]


def test_any_and_tool_choices_give_valid_tool_use_blocks(running: Running) -> None:
    out = _create(running, tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"})
    assert out.stop_reason == "tool_use"
    [use, *_] = _uses(out)
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    jsonschema.validate(use.input, WEATHER_SCHEMA)
    one = _create(
        running, tools=TOOLS, tool_choice={"type": "any", "disable_parallel_tool_use": True}
    )
    assert len(_uses(one)) == 1 and one.stop_reason == "tool_use"
    check("Message", out.model_dump(mode="json"))


def test_streamed_input_json_assembles_to_the_same_input(running: Running) -> None:
    choice = {"type": "any"}
    whole = _create(running, tools=TOOLS, tool_choice=choice)
    inputs: dict[int, str] = {}
    names: dict[int, str] = {}
    with _client(running).messages.stream(
        model=MODEL,
        max_tokens=80,
        messages=ASK,
        tools=TOOLS,
        tool_choice=choice,
        extra_body={"temperature": 0},
    ) as stream:
        for event in stream:
            if event.type == "content_block_start" and event.content_block.type == "tool_use":
                inputs[event.index], names[event.index] = "", event.content_block.name
            elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                inputs[event.index] += event.delta.partial_json
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    streamed = [(names[i], json.loads(inputs[i])) for i in sorted(inputs)]
    assert streamed == [(u.name, u.input) for u in _uses(whole)]
    body = {"model": MODEL, "max_tokens": 80, "messages": ASK, "tools": TOOLS}
    body |= {"tool_choice": choice, "stream": True, "temperature": 0}
    raw = httpx.post(f"{running.base_url}/v1/messages", json=body, timeout=60).text
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    assert any(e.get("delta", {}).get("type") == "input_json_delta" for e in events)
    for event in events:
        if event["type"] != "ping":  # not in the document's MessageStreamEvent
            check("MessageStreamEvent", event)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search_20250305"),
        ({"tools": TOOLS, "tool_choice": {"type": "tool", "name": "nope"}}, "nope"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "toolu_x", "content": "1"}
                        ],
                    }
                ]
            },
            "toolu_x",
        ),
    ],
)
def test_refusals_say_what_is_wrong(running: Running, kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        _create(running, **kwargs)
    assert words in str(refused.value)


def test_cache_control_on_a_tool_is_a_breakpoint_after_the_tools(roomy: Running) -> None:
    running = roomy
    tools = [_tool(t) for t in many_tools()]
    tools[-1]["cache_control"] = AUTO_CACHE
    first = _create(running, tools=tools, max_tokens=2)
    assert first.usage.cache_creation_input_tokens > 1024
    second = _create(
        running, tools=tools, max_tokens=2, messages=[{"role": "user", "content": "Time in Oslo?"}]
    )
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens


def test_an_agent_loop_reads_each_previous_turn(roomy: Running) -> None:
    running = roomy
    tools = [_tool(t) for t in many_tools()]
    messages: list[Any] = list(ASK)
    usages = []
    for turn in range(4):
        out = _create(
            running,
            tools=tools,
            messages=messages,
            cache_control=AUTO_CACHE,
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
        )
        usages.append(out.usage)
        [use] = _uses(out)
        messages.append(
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in out.content]}
        )
        result = {"type": "tool_result", "tool_use_id": use.id, "content": f"{20 + turn} C"}
        messages.append({"role": "user", "content": [result]})
    for before, after in itertools.pairwise(usages):
        prompt = (
            before.input_tokens
            + before.cache_read_input_tokens
            + before.cache_creation_input_tokens
        )
        assert after.cache_read_input_tokens == prompt - _tail(running)  # the whole previous prompt
        assert after.cache_creation_input_tokens > before.output_tokens  # ... then the answer on


def _tail(running: Running) -> int:
    """Template tokens after a breakpoint at the prompt's last block: its end-of-turn and
    the next turn's opening, which a breakpoint at the end of the block leaves out."""
    rendered = render_chat(running.engine.tokenizer, [{"role": "user", "content": "x"}])
    end = rendered.messages[-1].content_end
    assert end is not None
    return len(rendered.token_ids) - end
