"""The providers' cache diagnostics through their SDKs' own types, against the in-process
server: OpenAI's `prompt_cache_options.comparison_response_id` -> `Response.
prompt_cache_diagnostics`, Anthropic's `diagnostics.previous_message_id` ->
`Message.diagnostics`; each reason built from a constructed pair of requests, a hit, and
not-found for a missing id and for another tenant's id; ours beside them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from promptcache.api.auth import KeyRing
from promptcache.config import EngineConfig
from promptcache.model.loading.loader import LoadedModel
from tests.api.inprocess import MODEL, TENANT_KEYS, Running, serve_in_process, wait_idle
from tests.api.test_anthropic import check as check_anthropic
from tests.api.test_openapi_schema import check
from tests.api.tools_fixtures import CLOCK, WEATHER

pytestmark = pytest.mark.server

DOC = "Tide tables list the times of high and low water at a harbour for each day. " * 12
OTHER = DOC.replace("low water", "slack water", 1)
PLEASE = "Please answer in one short sentence, giving the time in hours and minutes. " * 3
TOOL_W = {"type": "function", **WEATHER["function"]}  # Responses' flat function tools
TOOL_C = {"type": "function", **CLOCK["function"]}


def _respond(running: Running, key: str = "k", compare: str | None = None, **kw: Any) -> Any:
    """The typed Response, with the raw JSON it came from as `.raw`."""
    kw.setdefault("instructions", DOC)
    kw.setdefault("input", "When is high water?")
    if compare is not None:
        kw["extra_body"] = {"prompt_cache_options": {"comparison_response_id": compare}}
    responses = running.client(key).responses
    if kw.get("stream"):
        return responses.create(model=MODEL, max_output_tokens=4, temperature=0, **kw)
    got = responses.with_raw_response.create(model=MODEL, max_output_tokens=4, temperature=0, **kw)
    parsed = got.parse()
    object.__setattr__(parsed, "raw", got.http_response.json())
    return parsed


def test_openai_hit_and_each_miss_reason(running: Running) -> None:
    first = _respond(running)
    assert first.prompt_cache_diagnostics is None  # never asked: none
    turn = _respond(running, compare=first.id, previous_response_id=first.id, input="And low?")
    assert turn.prompt_cache_diagnostics.type == "cache_hit"
    # The format is shown after the tools, before the instructions: a change of it alone
    # misses from there.
    again = _respond(running, compare=first.id, text={"format": {"type": "json_object"}})
    diag, ours = again.prompt_cache_diagnostics, again.model_extra["promptcache_diagnostics"]
    assert diag.type == "cache_miss" and diag.reason == "text_format_changed"
    assert ours["change"] == "format_changed" and ours["message_index"] == 0
    assert ours["diverged_at"] < 16  # in the preamble, before the instructions
    assert diag.cache_missed_tokens == again.usage.input_tokens - ours["diverged_at"]
    keyed = _respond(running, compare=first.id, prompt_cache_key="another")
    assert keyed.prompt_cache_diagnostics.type == "cache_hit"  # one worker: keys share
    changed = _respond(running, compare=first.id, instructions=OTHER)
    diag, ours = changed.prompt_cache_diagnostics, changed.model_extra["promptcache_diagnostics"]
    assert diag.type == "cache_miss" and diag.reason == "input_changed"
    k = ours["diverged_at"]
    assert ours["change"] == "system_changed" and ours["message_role"] == "system"
    assert diag.comparison_reusable_tokens == k
    assert diag.cache_missed_tokens == changed.usage.input_tokens - k
    # The published document predates prompt_cache_diagnostics: the rest validates.
    check("Response", {k: v for k, v in changed.raw.items() if k != "prompt_cache_diagnostics"})
    assert changed.usage.input_tokens_details.reused_tokens == k // 16 * 16  # type: ignore[attr-defined]
    # A question that differs only in its last block leaves all of the cached part shared.
    question = _respond(running, compare=first.id, input="When is low water?")
    assert question.prompt_cache_diagnostics.type == "cache_hit"
    long = _respond(running, input=f"When is high water? {PLEASE}")
    other = _respond(running, compare=long.id, input=f"When is low water? {PLEASE}")
    assert other.prompt_cache_diagnostics.reason == "input_changed"
    assert other.model_extra["promptcache_diagnostics"]["message_role"] == "user"
    wait_idle(running)


def test_openai_tools_changed(running: Running) -> None:
    first = _respond(running, tools=[TOOL_W])
    other = _respond(running, compare=first.id, tools=[TOOL_C])
    diag = other.prompt_cache_diagnostics
    assert diag.type == "cache_miss" and diag.reason == "tools_changed"
    assert other.model_extra["promptcache_diagnostics"]["change"] == "tools_changed"
    wait_idle(running)


def _schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"format": {"type": "json_schema", "name": "tide", "schema": schema}}


def test_openai_text_format_changed(running: Running) -> None:
    tide = {
        "type": "object",
        "properties": {"high": {"type": "string"}, "low": {"type": "string"}},
        "required": ["high", "low"],
        "additionalProperties": False,
    }
    first = _respond(running, tools=[TOOL_W], text=_schema_format(tide))
    # Another client sends the same schema with its keys in another order (the properties
    # keep theirs: the answer is written in it): the same prompt, a hit.
    reordered = dict(reversed(list(tide.items())))
    same = _respond(running, compare=first.id, tools=[TOOL_W], text=_schema_format(reordered))
    assert same.prompt_cache_diagnostics.type == "cache_hit"
    assert same.usage.input_tokens == first.usage.input_tokens
    other = {**tide, "properties": {"high": {"type": "string"}}, "required": ["high"]}
    changed = _respond(running, compare=first.id, tools=[TOOL_W], text=_schema_format(other))
    diag, ours = changed.prompt_cache_diagnostics, changed.model_extra["promptcache_diagnostics"]
    assert diag.type == "cache_miss" and diag.reason == "text_format_changed"
    assert ours["change"] == "format_changed"
    assert 0 < ours["diverged_at"] == diag.comparison_reusable_tokens
    # The tools come first: the same format with other tools is tools_changed.
    tools = _respond(running, compare=first.id, tools=[TOOL_C], text=_schema_format(tide))
    assert tools.prompt_cache_diagnostics.reason == "tools_changed"
    wait_idle(running)


def test_openai_not_found_no_oracle(running_keys: Running) -> None:
    mine = _respond(running_keys, key="sk-a")
    missing = _respond(running_keys, key="sk-a", compare="resp_missing")
    assert missing.prompt_cache_diagnostics.type == "comparison_response_not_found"
    theirs = _respond(running_keys, key="sk-b", compare=mine.id)  # another tenant's id
    assert theirs.prompt_cache_diagnostics.type == "comparison_response_not_found"
    assert theirs.model_extra["promptcache_diagnostics"]["change"] == "not_found"
    wait_idle(running_keys)


def test_openai_streamed_final_response_carries_it(running: Running) -> None:
    first = _respond(running)
    stream = _respond(running, compare=first.id, instructions=OTHER, stream=True)
    done = [e for e in stream if e.type in ("response.completed", "response.incomplete")]
    assert done[0].response.prompt_cache_diagnostics.reason == "input_changed"
    wait_idle(running)


@pytest.fixture
def short_marks(bundled: LoadedModel, tmp_path: Path) -> Iterator[Running]:
    """Anthropic's requests cache only at breakpoints: here from 128 tokens on (not 1,024),
    so that short prompts are cached; two tenants."""
    config = EngineConfig(kv_cache_bytes=128 << 20, min_breakpoint_tokens=128)
    yield from serve_in_process(bundled, tmp_path, config, KeyRing(TENANT_KEYS))


def _anthropic(running: Running, key: str = "sk-a") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.base_url, api_key=key, max_retries=0)


def _message(
    running: Running,
    messages: list[dict[str, Any]],
    previous: str | None = None,
    key: str = "sk-a",
    **kw: Any,
) -> Any:
    kw.setdefault("system", DOC)
    extra: dict[str, Any] = {"temperature": 0, "cache_control": {"type": "ephemeral"}}
    if previous is not None:
        extra["diagnostics"] = {"previous_message_id": previous}
    return _anthropic(running, key).messages.create(
        model=MODEL, max_tokens=4, messages=messages, extra_body=extra, **kw
    )


ASK = [{"role": "user", "content": "When is high water?"}]


def _tool(t: dict[str, Any]) -> dict[str, Any]:
    return {"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}


def test_anthropic_each_reason(short_marks: Running) -> None:
    running = short_marks
    first = _message(running, ASK)
    assert first.diagnostics is None
    answer = {"role": "assistant", "content": first.content[0].text}
    turn = [*ASK, answer, {"role": "user", "content": "And low?"}]
    extended = _message(running, turn, first.id)
    assert extended.diagnostics is None  # reused all of it: no divergence
    assert extended.model_extra["promptcache_diagnostics"]["change"] == "hit"
    system = _message(running, ASK, first.id, system=OTHER)
    reason = system.diagnostics.cache_miss_reason
    ours = system.model_extra["promptcache_diagnostics"]
    assert reason.type == "system_changed"
    assert reason.cache_missed_input_tokens == ours["would_have_read_tokens"] > 0
    check_anthropic("Message", system.model_dump(exclude={"promptcache_diagnostics"}))
    edited = [{"role": "user", "content": "When is low water?"}, *turn[1:]]
    later = _message(running, edited, extended.id)
    assert later.diagnostics.cache_miss_reason.type == "messages_changed"
    assert later.model_extra["promptcache_diagnostics"]["message_index"] == 1
    tools = _message(running, ASK, first.id, tools=[_tool(TOOL_W)])
    assert tools.diagnostics.cache_miss_reason.type == "tools_changed"
    # The output schema is shown after the tools, before the system prompt: in Anthropic's
    # order (tools, system, messages) that is a change at the system level.
    schema = {"type": "object", "properties": {"high": {"type": "string"}}}
    fmt = {"format": {"type": "json_schema", "schema": schema}}
    formatted = _message(running, ASK, first.id, output_config=fmt)
    assert formatted.diagnostics.cache_miss_reason.type == "system_changed"
    assert formatted.model_extra["promptcache_diagnostics"]["change"] == "format_changed"
    missing = _message(running, ASK, "msg_missing")
    assert missing.diagnostics.cache_miss_reason.type == "previous_message_not_found"
    opted = _anthropic(running).messages.create(
        model=MODEL,
        max_tokens=2,
        messages=ASK,
        extra_body={"diagnostics": {}},  # type: ignore[arg-type]
    )
    assert opted.diagnostics is None
    wait_idle(running)


def test_anthropic_streamed_message_start_and_no_oracle(short_marks: Running) -> None:
    running_keys = short_marks
    mine = _message(running_keys, ASK, key="sk-a")
    theirs = _message(running_keys, ASK, mine.id, key="sk-b")
    assert theirs.diagnostics.cache_miss_reason.type == "previous_message_not_found"
    client = _anthropic(running_keys, "sk-a")
    extra = {"temperature": 0, "diagnostics": {"previous_message_id": mine.id}}
    with client.messages.stream(
        model=MODEL,
        max_tokens=4,
        messages=ASK,
        system=OTHER,
        extra_body=extra,  # type: ignore[arg-type]
    ) as stream:
        start = next(e for e in stream if e.type == "message_start")
        assert start.message.diagnostics.cache_miss_reason.type == "system_changed"
    wait_idle(running_keys)
