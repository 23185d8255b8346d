"""Fuzzing the server with schemathesis against its own OpenAPI document: every generated
request (valid by the schema, and deliberately invalid ones) is answered with a 2xx or a
4xx in its API's error shape, never a 5xx or a hang; afterwards the server is healthy and
the KV pool's integrity check holds.

The engine runs with a 96-token context so that each generation is short; prompts longer
than that are refused (400), which is one of the outcomes under test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from promptcache.config import EngineConfig
from promptcache.model.loading.loader import LoadedModel
from tests.api.inprocess import MODEL, SMALL_LIMITS, Running, serve_in_process, wait_idle

pytestmark = [pytest.mark.slow, pytest.mark.server]

# Generated requests per operation and mode, the same ones every run (derandomized, so
# `make test` is repeatable); PROMPTCACHE_FUZZ_EXAMPLES=500 PROMPTCACHE_FUZZ_RANDOM=1
# explores further (a run like that found the tiny-temperature bug).
EXAMPLES = int(os.environ.get("PROMPTCACHE_FUZZ_EXAMPLES", "20"))
RANDOM = os.environ.get("PROMPTCACHE_FUZZ_RANDOM") == "1"
seen: dict[str, int] = {}  # status codes seen, for the summary


@pytest.fixture(scope="module")
def fuzzed(bundled: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = EngineConfig(kv_cache_bytes=64 << 20, max_model_len=96)
    tmp = tmp_path_factory.mktemp("fuzz")
    yield from serve_in_process(bundled, tmp, config, limits=SMALL_LIMITS)


def _operations(base_url: str) -> list[Any]:
    loaded = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    return [result.ok() for result in loaded.get_all_operations()]


def _served_model(case: Any) -> Any:
    """Most generated bodies name a random model (a plain 404): name ours in those whose
    `model` is a string, so the requests reach the engine."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body["model"] = MODEL
    return case


def _error_shape(path: str, body: Any) -> bool:
    if path.startswith("/v1/messages"):
        return (
            body.get("type") == "error"
            and isinstance(body.get("error"), dict)
            and isinstance(body["error"].get("type"), str)
            and isinstance(body["error"].get("message"), str)
        )
    error = body.get("error")
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_every_generated_request_gets_a_2xx_or_a_clean_4xx(
    fuzzed: Running, mode: GenerationMode
) -> None:
    operations = _operations(fuzzed.base_url)
    assert {op.label for op in operations} >= {
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/responses",
        "POST /v1/messages",
    }
    for op in operations:

        @given(case=op.as_strategy(generation_mode=mode).map(_served_model))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=not RANDOM,
        )
        def run(case: Any) -> None:
            response = case.call(base_url=fuzzed.base_url, timeout=60)
            key = f"{mode.value} {case.method} {case.path} {response.status_code}"
            seen[key] = seen.get(key, 0) + 1
            assert response.status_code < 500, f"{key}: {case.body} {response.text[:300]}"
            if response.status_code >= 400:
                assert _error_shape(case.path, response.json()), f"{key}: {response.text[:500]}"

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (no parameters and no body)
            assert mode is GenerationMode.NEGATIVE and op.method.upper() == "GET", op.label
    for endpoint in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages"):
        assert any(f"{mode.value} POST {endpoint} " in key for key in seen), endpoint


def test_the_server_is_healthy_after_the_fuzz(fuzzed: Running) -> None:
    assert seen, "the fuzz test did not run first"
    health = httpx.get(f"{fuzzed.base_url}/health", timeout=10)
    assert health.status_code == 200
    wait_idle(fuzzed)
    print("fuzz outcomes:", dict(sorted(seen.items())))


def test_the_openapi_document_names_our_errors(fuzzed: Running) -> None:
    doc = httpx.get(f"{fuzzed.base_url}/openapi.json", timeout=10).json()
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert "422" not in chat["responses"] and "400" in chat["responses"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    request = doc["components"]["schemas"][body]
    assert request["additionalProperties"] is False  # unknown fields are refused
    assert "prompt_cache_options" in request["properties"]
    error = doc["paths"]["/v1/messages"]["post"]["responses"]["400"]["content"]
    assert error["application/json"]["schema"]["properties"]["type"] == {"const": "error"}


# -- generated schemas ---------------------------------------------------------------------
# JSON schemas built from keywords XGrammar reads (and some it refuses), nested a few levels,
# sent as each field that takes one. Every answer is a 200, or a 400 in the API's shape that
# names that field; never a 5xx.

_LEAF = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer", "minimum": -5, "maximum": 500},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"enum": ["a", "b", 3]},
        {"const": "x"},
        {"type": "string", "pattern": "[a-z]{1,6}[0-9]"},
        {"type": "string", "minLength": 2, "maxLength": 5},
        {"type": "string", "format": "date"},
        {"type": "bogus"},  # refused by the library: a 400
        {"type": "string", "pattern": "(unclosed"},
        {"minProperties": "x"},
        {},
    ]
)


def _node(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    names = st.text("abcxyz_", min_size=1, max_size=6)
    obj = st.builds(
        lambda props, req: {"type": "object", "properties": props, "required": req},
        st.dictionaries(names, children, max_size=4),
        st.lists(names, max_size=2),
    )
    arr = st.builds(
        lambda items, lo, hi: {"type": "array", "items": items, "minItems": lo, "maxItems": hi},
        children,
        st.integers(0, 3),
        st.integers(0, 6),
    )
    union = st.builds(lambda xs: {"anyOf": xs}, st.lists(children, min_size=1, max_size=3))
    return (
        obj | arr | union | st.builds(lambda x: {"$ref": "#/$defs/x", "$defs": {"x": x}}, children)
    )


SCHEMAS = st.recursive(_LEAF, _node, max_leaves=12)


def _schema_request(where: str, schema: Any) -> tuple[str, dict[str, Any], str]:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    if where == "response_format":
        format_ = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        return "/v1/chat/completions", {**chat, "response_format": format_}, where
    if where == "tools":
        tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
        return "/v1/chat/completions", {**chat, "tools": [tool], "tool_choice": "required"}, where
    text = {"format": {"type": "json_schema", "name": "x", "schema": schema}}
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 16, "text": text}
    return "/v1/responses", body, where


@pytest.mark.parametrize("where", ["response_format", "tools", "text.format"])
def test_generated_schemas_get_a_2xx_or_a_400_naming_their_field(
    fuzzed: Running, where: str
) -> None:
    @given(schema=SCHEMAS)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=not RANDOM,
    )
    def run(schema: Any) -> None:
        path, body, param = _schema_request(where, schema)
        r = httpx.post(f"{fuzzed.base_url}{path}", json=body, timeout=60)
        key = f"schema {where} {r.status_code}"
        seen[key] = seen.get(key, 0) + 1
        assert r.status_code in (200, 400), f"{key}: {schema} {r.text[:300]}"
        if r.status_code == 400:
            error = r.json()["error"]
            assert _error_shape(path, r.json()) and error["type"] == "invalid_request_error"
            fields = (param, "tools[0]") if param == "tools" else (param,)
            # or a prompt (the rendered tools) past the 96-token context
            assert error["param"] in (*fields, "messages", "input"), f"{schema}: {r.text[:300]}"

    run()
    assert httpx.get(f"{fuzzed.base_url}/health", timeout=10).status_code == 200
