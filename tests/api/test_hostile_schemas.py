"""Hostile schemas and tool lists (issue 34): each size limit is a 400 naming the limit and
the field, before anything compiles; a schema that compiles for longer than the budget is
a 400 naming `grammar_compile_timeout_s`, while another client's stream runs on; afterwards
the server answers and its KV pool's integrity check holds.

The slow schema is real: string properties whose patterns XGrammar expands (`[a-z]{1,n}`),
measured at ~0.3 s to compile on the bundled tokenizer (bench/hostile_schema.py), against
a budget of 0.05 s here. The test checks that its compile did run past the budget.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from promptcache.api.schema_limits import SchemaLimits
from promptcache.config import EngineConfig
from promptcache.model.loading.loader import LoadedModel
from tests.api.inprocess import MODEL, SMALL_LIMITS, Running, serve_in_process, wait_for, wait_idle

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from hostile_schema import pattern_schema

pytestmark = pytest.mark.server

HI = [{"role": "user", "content": "hi"}]
BUDGET_S = 0.05
SCHEMA_LIMITS = SchemaLimits(max_schema_bytes=4096, max_schema_depth=8, max_tools=4)


@pytest.fixture(scope="module")
def hostile(bundled: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = EngineConfig(kv_cache_bytes=64 << 20, grammar_compile_timeout_s=BUDGET_S)
    limits = replace(SMALL_LIMITS, schemas=SCHEMA_LIMITS)
    yield from serve_in_process(bundled, tmp_path_factory.mktemp("hostile"), config, limits=limits)


def _post(running: Running, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{running.base_url}{path}", json=body, timeout=120)


def _nested(depth: int) -> dict[str, Any]:
    """A schema whose JSON nests `depth` levels (arrays of arrays)."""
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth - 1):
        schema = {"type": "array", "items": schema}
    return schema


def _deep_object(depth: int) -> dict[str, Any]:
    """An object schema (tools take nothing else) nesting `depth` levels."""
    return {"type": "object", "properties": {"a": _nested(depth - 2)}}


def _tool(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": schema}}


def _format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def _text_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"format": {"type": "json_schema", "name": "x", "schema": schema}}


WIDE = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(200)}}
OBJECT = {"type": "object"}
CHAT = "/v1/chat/completions"
RESPONSES = "/v1/responses"
SIZE_CASES = [
    (CHAT, {"response_format": _format(_nested(9))}, "response_format", "schema_too_deep"),
    (CHAT, {"response_format": _format(WIDE)}, "response_format", "schema_too_large"),
    (CHAT, {"tools": [_tool("f", _deep_object(9))]}, "tools", "schema_too_deep"),
    (CHAT, {"tools": [_tool(f"f{i}", OBJECT) for i in range(5)]}, "tools", "too_many_tools"),
    (RESPONSES, {"text": _text_format(_nested(9))}, "text.format", "schema_too_deep"),
    (RESPONSES, {"text": _text_format(WIDE)}, "text.format", "schema_too_large"),
]


@pytest.mark.parametrize(("path", "fields", "param", "code"), SIZE_CASES)
def test_size_limits_are_400s_naming_the_limit(
    hostile: Running, path: str, fields: dict[str, Any], param: str, code: str
) -> None:
    body = {"model": MODEL, "max_tokens": 2, **fields}
    body |= {"messages": HI} if path == CHAT else {"input": "hi", "max_output_tokens": 16}
    body.pop("max_tokens") if path == RESPONSES else None
    r = _post(hostile, path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    limit = {"schema_too_deep": "max_schema_depth", "schema_too_large": "max_schema_bytes"}
    assert f"({limit.get(code, 'max_tools')})" in error["message"]


def test_anthropic_tools_past_the_limit(hostile: Running) -> None:
    tools = [{"name": f"f{i}", "input_schema": OBJECT} for i in range(5)]
    body = {"model": MODEL, "messages": HI, "max_tokens": 2, "tools": tools}
    r = _post(hostile, "/v1/messages", body)
    assert r.status_code == 400 and r.json()["type"] == "error", r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"] == (
        "tools: 5 tools, more than this server's limit of 4 (max_tools)"
    )


class Stream(threading.Thread):
    """A streamed chat request read to its end, counting its content chunks."""

    def __init__(self, running: Running, max_tokens: int) -> None:
        super().__init__()
        story = [{"role": "user", "content": "Tell me a very long story."}]
        self.body = {"model": MODEL, "messages": story, "max_tokens": max_tokens}
        self.body |= {"stream": True, "temperature": 0}
        self.url = f"{running.base_url}{CHAT}"
        self.chunks: list[dict[str, Any]] = []
        self.first = threading.Event()
        self.status = 0

    def run(self) -> None:
        with httpx.stream("POST", self.url, json=self.body, timeout=120) as r:
            self.status = r.status_code
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    self.chunks.append(json.loads(line[6:]))
                    self.first.set()


def _slow_cases() -> list[tuple[str, dict[str, Any], str]]:
    """Three distinct slow schemas (each compiles on its own), one per field."""
    chat = {"messages": HI, "max_tokens": 2}
    return [
        (CHAT, {**chat, "response_format": _format(pattern_schema(14, 0))}, "response_format"),
        (CHAT, {**chat, "tools": [_tool("f", pattern_schema(14, 1))]}, "tools"),
        (
            RESPONSES,
            {"input": "hi", "max_output_tokens": 16, "text": _text_format(pattern_schema(14, 2))},
            "text.format",
        ),
    ]


def test_a_schema_past_the_compile_budget_is_a_400_while_a_stream_runs(
    hostile: Running,
) -> None:
    grammars = hostile.engine.grammars
    stream = Stream(hostile, max_tokens=120)
    stream.start()
    assert stream.first.wait(60)
    for path, fields, param in _slow_cases():
        for _ in range(2):  # the second time, refused without compiling again
            r = _post(hostile, path, {"model": MODEL, **fields})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert (error["param"], error["code"]) == (param, "grammar_too_complex")
            assert "limit of 0.05 s (grammar_compile_timeout_s)" in error["message"]
    still_streaming = stream.is_alive()
    stream.join(120)
    assert still_streaming, "the stream ended before the hostile requests were answered"
    assert stream.status == 200 and stream.chunks[-1]["choices"][0]["finish_reason"] == "length"
    wait_for(lambda: grammars.budget.in_flight == 0, timeout=120)  # the compiles ran on
    assert grammars.budget.timeouts == 3
    assert grammars.stats.compiles == 0 and grammars.stats.failures == 6
    assert grammars.stats.compile_seconds > 3 * BUDGET_S  # they were genuinely slow
    r = _post(hostile, CHAT, {"model": MODEL, "messages": HI, "max_tokens": 1})
    assert r.status_code == 200, r.text
    wait_idle(hostile)
