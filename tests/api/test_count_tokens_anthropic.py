"""`POST /v1/messages/count_tokens` through the official `anthropic` SDK on a real server
(bundled model, float32): the count is the real request's whole prompt (its usage's
`input_tokens` + `cache_creation_input_tokens` + `cache_read_input_tokens`) with system,
tools and a JSON schema; with `cache_control`, the `promptcache` extension foresees the
next request's cache read to the token and counting changes nothing; errors in Anthropic's
shape; objects valid against Anthropic's published OpenAPI document."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from tests.api.inprocess import MODEL, Running, wait_idle
from tests.api.test_anthropic import DOC, FIVE_MIN, check
from tests.api.tools_fixtures import WEATHER, WEATHER_SCHEMA

pytestmark = pytest.mark.server

ASK: Any = [{"role": "user", "content": "What is a lichen?"}]
TOOL: Any = {
    "name": "get_weather",
    "description": WEATHER["function"]["description"],
    "input_schema": WEATHER_SCHEMA,
}
SCHEMA: Any = {"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}}


def _client(running: Running, key: str = "k") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.base_url, api_key=key, max_retries=0)


def _whole_prompt(usage: Any) -> int:
    return int(
        usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    )


def _extension(count: Any) -> dict[str, int]:
    return dict((count.model_extra or {})["promptcache"])


SHAPES: list[dict[str, Any]] = [
    {"messages": ASK},
    {"messages": ASK, "system": "Answer in one sentence."},
    {"messages": ASK, "tools": [TOOL], "tool_choice": {"type": "auto"}},
    {"messages": ASK, "output_config": SCHEMA},
    {"messages": ASK, "system": [{"type": "text", "text": DOC, "cache_control": FIVE_MIN}]},
]


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_count_is_the_real_requests_whole_prompt(running: Running, shape: int) -> None:
    kw = SHAPES[shape]
    client = _client(running)
    count = client.messages.count_tokens(model=MODEL, **kw)
    real = client.messages.create(model=MODEL, max_tokens=2, **kw)
    assert count.input_tokens == _whole_prompt(real.usage)
    assert count.input_tokens == len(running.sequences[-1].prompt_token_ids)
    assert len(running.sequences) == 1  # the count ran nothing


def _pool_state(running: Running) -> tuple[Any, ...]:
    pool = running.engine.pool
    blocks = [
        (b.ref_count, b.block_hash, b.retention, b.last_use, b.cached_at) for b in pool.blocks
    ]
    return blocks, [b.block_id for b in pool.free_queue], running.engine.stats()


def test_cache_control_reads_are_foreseen_to_the_token(running: Running) -> None:
    client = _client(running)
    system: Any = [{"type": "text", "text": DOC, "cache_control": FIVE_MIN}]
    first = client.messages.count_tokens(model=MODEL, system=system, messages=ASK)
    assert _extension(first) == {"reused_tokens": 0, "cached_tokens": 0}
    written = client.messages.create(model=MODEL, max_tokens=2, system=system, messages=ASK)
    position = written.usage.cache_creation_input_tokens
    assert position > 1024
    wait_idle(running)
    follow: Any = [{"role": "user", "content": "Where do they grow?"}]
    state = _pool_state(running)
    count = client.messages.count_tokens(model=MODEL, system=system, messages=follow)
    assert _extension(count) == {"reused_tokens": position, "cached_tokens": position}
    assert _pool_state(running) == state  # nothing held, refreshed or counted
    real = client.messages.create(model=MODEL, max_tokens=2, system=system, messages=follow)
    assert real.usage.cache_read_input_tokens == position
    assert count.input_tokens == _whole_prompt(real.usage)
    # a request with no breakpoint of its own still reads the tenant's latest ones
    wait_idle(running)
    plain = client.messages.count_tokens(model=MODEL, system=DOC, messages=ASK)
    assert _extension(plain) == {"reused_tokens": position, "cached_tokens": position}
    real = client.messages.create(model=MODEL, max_tokens=2, system=DOC, messages=ASK)
    assert real.usage.cache_read_input_tokens == position


def test_the_count_object_validates(running: Running) -> None:
    body = {"model": MODEL, "messages": ASK}
    got = httpx.post(f"{running.base_url}/v1/messages/count_tokens", json=body, timeout=60)
    assert got.status_code == 200
    check("CountMessageTokensResponse", got.json())


BAD: list[tuple[dict[str, Any], int, str, str]] = [
    ({"model": "claude-nope", "messages": ASK}, 404, "not_found_error", "model"),
    ({"model": MODEL}, 400, "invalid_request_error", "messages"),
    ({"messages": ASK}, 400, "invalid_request_error", "model"),
    ({"model": MODEL, "messages": ASK, "max_tokens": 5}, 400, "invalid_request_error", "max"),
    (
        {"model": MODEL, "messages": ASK, "thinking": {"type": "enabled", "budget_tokens": 2048}},
        400,
        "invalid_request_error",
        "thinking",
    ),
    ({"model": MODEL, "messages": ASK, "speed": "fast"}, 400, "invalid_request_error", "speed"),
    (
        {"model": MODEL, "messages": [{"role": "assistant", "content": "Hi"}]},
        400,
        "invalid_request_error",
        "messages",
    ),
    (
        {"model": MODEL, "messages": [{"role": "user", "content": []}], "cache_control": FIVE_MIN},
        400,
        "invalid_request_error",
        "cache_control",
    ),
    (
        {"model": MODEL, "messages": ASK, "tools": [{"type": "web_search_20250305"}]},
        400,
        "invalid_request_error",
        "tools",
    ),
]


@pytest.mark.parametrize(("body", "status", "kind", "names"), BAD)
def test_errors_in_anthropic_shape(
    running: Running, body: dict[str, Any], status: int, kind: str, names: str
) -> None:
    got = httpx.post(f"{running.base_url}/v1/messages/count_tokens", json=body, timeout=60)
    assert got.status_code == status, got.text
    assert got.json()["type"] == "error" and got.json()["error"]["type"] == kind
    assert names in got.json()["error"]["message"], got.text
    check("ErrorResponse", got.json())


def test_sdk_raises_the_right_errors(running: Running) -> None:
    client = _client(running)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-nope", messages=ASK)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model=MODEL, messages=ASK, speed="fast")
