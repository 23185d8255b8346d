"""Tool calls as text: canonical tool definitions and arguments, the call format, parsing
an output back into calls, and the stream reader agreeing with it at every split."""

from __future__ import annotations

import json

import pytest

from promptcache.text.tools import (
    ParsedCall,
    ToolStream,
    canonical_json,
    canonical_tool,
    format_calls,
    ordered_arguments,
    parse_output,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "opts": {"type": "object", "properties": {"b": {}, "a": {}}},
    },
}


def test_canonical_tool_sorts_keys_but_keeps_property_order() -> None:
    a = {"type": "function", "function": {"parameters": SCHEMA, "name": "f", "description": "d"}}
    b = {
        "function": {"description": "d", "name": "f", "parameters": dict(reversed(SCHEMA.items()))},
        "type": "function",
    }
    assert canonical_json(canonical_tool(a)) == canonical_json(canonical_tool(b))
    props = canonical_tool(a)["function"]["parameters"]["properties"]
    assert list(props) == ["city", "opts"] and list(props["opts"]["properties"]) == ["b", "a"]


def test_ordered_arguments_follow_the_schema() -> None:
    args = {"opts": {"a": 1, "b": 2}, "extra": True, "city": "Paris"}
    ordered = ordered_arguments(args, SCHEMA)
    assert canonical_json(ordered) == '{"city": "Paris", "opts": {"b": 2, "a": 1}, "extra": true}'


OUTPUT = format_calls(
    "Let me check.", [("get_weather", '{"city": "Par}\\n</tool_call>is"}'), ("noop", "{}")]
)


def test_parse_output_reads_content_and_calls() -> None:
    content, calls = parse_output(OUTPUT)
    assert content == "Let me check."
    assert calls == [
        ParsedCall("get_weather", '{"city": "Par}\\n</tool_call>is"}'),
        ParsedCall("noop", "{}"),
    ]
    assert parse_output("no calls here") == ("no calls here", [])


def test_a_call_cut_short_keeps_what_was_written() -> None:
    cut = OUTPUT[: OUTPUT.index("Par") + 3]
    assert parse_output(cut) == ("Let me check.", [ParsedCall("get_weather", '{"city": "Par')])
    assert parse_output(OUTPUT[: OUTPUT.index("get_")]) == ("Let me check.", [])


def _assemble(pieces: list) -> tuple[str, list[tuple[str, str]]]:
    content, calls = "", []
    for p in pieces:
        if p.index is None:
            content += p.content
        elif p.name is not None:
            assert p.index == len(calls)
            calls.append([p.name, ""])
        else:
            calls[p.index][1] += p.arguments
    return content, [tuple(c) for c in calls]


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_the_stream_agrees_with_the_whole_output(step: int) -> None:
    stream, pieces = ToolStream(), []
    for end in range(0, len(OUTPUT), step):
        pieces += stream.feed(OUTPUT[:end])
    pieces += stream.feed(OUTPUT, final=True)
    content, calls = parse_output(OUTPUT)
    assert _assemble(pieces) == (content, [(c.name, c.arguments) for c in calls])
    for _name, args in _assemble(pieces)[1]:
        json.loads(args)


def test_the_stream_holds_back_a_possible_call_opening() -> None:
    stream = ToolStream()
    assert _assemble(stream.feed("Hello <tool")) == ("Hello ", [])
    assert _assemble(stream.feed("Hello <tool>", final=True)) == ("<tool>", [])
