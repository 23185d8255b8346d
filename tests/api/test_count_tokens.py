"""`POST /v1/responses/input_tokens` through the official `openai` SDK on a real server
(bundled model, float32): the count is the real request's `usage.input_tokens` whatever
the request holds (instructions, tools, a JSON schema, `previous_response_id`); the
`promptcache` extension foresees exactly what the next real request reuses, and counting
changes nothing in the cache; errors in OpenAI's shape; objects valid against OpenAI's
published OpenAPI document."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import InputTokenCountResponse

from tests.api.inprocess import MODEL, Running, wait_idle
from tests.api.test_openapi_schema import check
from tests.api.tools_fixtures import WEATHER, WEATHER_SCHEMA

pytestmark = pytest.mark.server

LONG = (
    "You are the archivist of a small museum. Catalogue each object with its room, shelf, "
    "era and the name of whoever donated it; never guess a date you were not given. "
) * 30  # over 1,024 tokens, within the test pool's 1,456-token context
TOOL = {"type": "function", **WEATHER["function"]}
FORMAT = {"type": "json_schema", "name": "weather", "schema": WEATHER_SCHEMA, "strict": True}


def _count(running: Running, **kw: Any) -> InputTokenCountResponse:
    return running.client().responses.input_tokens.count(model=MODEL, **kw)


def _create(running: Running, **kw: Any) -> Any:
    return running.client().responses.create(model=MODEL, temperature=0, max_output_tokens=2, **kw)


def _extension(count: InputTokenCountResponse) -> dict[str, int]:
    extra = count.model_extra or {}
    return dict(extra["promptcache"])


SHAPES: list[dict[str, Any]] = [
    {"input": "What is the capital of France?"},
    {
        "instructions": "Answer in one word.",
        "input": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": [{"type": "input_text", "text": "Another?"}]},
        ],
    },
    {"input": "Weather in Paris?", "tools": [TOOL], "tool_choice": "auto"},
    {"input": "Weather in Paris?", "tools": [TOOL], "parallel_tool_calls": False},
    {"input": "Weather in Paris, as JSON.", "text": {"format": FORMAT}},
]


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_count_is_the_real_requests_input_tokens(running: Running, shape: int) -> None:
    kw = SHAPES[shape]
    count = _count(running, **kw)
    assert isinstance(count, InputTokenCountResponse)
    assert count.object == "response.input_tokens"
    real = _create(running, **kw)
    assert count.input_tokens == real.usage.input_tokens
    assert count.input_tokens == len(running.sequences[-1].prompt_token_ids)
    assert len(running.sequences) == 1  # the count ran nothing


def test_count_continues_a_stored_conversation(running: Running) -> None:
    first = _create(running, instructions="Be brief.", input="Name a fruit.")
    kw: dict[str, Any] = {"previous_response_id": first.id, "input": "And a vegetable?"}
    count = _count(running, **kw)
    assert count.input_tokens == _create(running, **kw).usage.input_tokens
    # the earlier instructions are not carried over, as upstream: new ones count anew
    kw["instructions"] = "Be very brief."
    count = _count(running, **kw)
    assert count.input_tokens == _create(running, **kw).usage.input_tokens


def _pool_state(running: Running) -> tuple[list[tuple[Any, ...]], list[int]]:
    """Every block's holders, hash, retention and times, and the eviction order."""
    pool = running.engine.pool
    blocks = [
        (b.ref_count, b.block_hash, b.retention, b.last_use, b.cached_at) for b in pool.blocks
    ]
    return blocks, [b.block_id for b in pool.free_queue]


def test_reusable_tokens_foresee_the_next_request_and_change_nothing(running: Running) -> None:
    ask = {"instructions": LONG, "input": "Where is the clay lamp?"}
    before = _extension(_count(running, **ask))
    assert before == {"reused_tokens": 0, "cached_tokens": 0}
    first = _create(running, **ask)
    assert first.usage.input_tokens > 1024
    wait_idle(running)
    again = {"instructions": LONG, "input": "Who gave the bronze bell?"}
    state, stats = _pool_state(running), running.engine.stats()
    count = _count(running, **again)
    peek = _extension(count)
    assert peek["reused_tokens"] > 1024 and peek["cached_tokens"] >= 1024
    assert _extension(_count(running, **again)) == peek  # a peek is not a query or a hit
    assert _pool_state(running) == state  # nothing held, refreshed or dropped
    assert running.engine.stats() == stats  # no query, hit or write counted
    real = _create(running, **again)
    details = real.usage.input_tokens_details
    assert count.input_tokens == real.usage.input_tokens
    assert details.model_extra["reused_tokens"] == peek["reused_tokens"]
    assert details.cached_tokens == peek["cached_tokens"]


def test_reusable_tokens_are_the_tenants_own(running_keys: Running) -> None:
    ask = {"instructions": LONG, "input": "Where is the clay lamp?"}
    create = running_keys.client("sk-a").responses.create
    create(model=MODEL, temperature=0, max_output_tokens=2, **ask)
    wait_idle(running_keys)
    mine = running_keys.client("sk-a").responses.input_tokens.count(model=MODEL, **ask)
    theirs = running_keys.client("sk-b").responses.input_tokens.count(model=MODEL, **ask)
    assert _extension(mine)["reused_tokens"] > 1024
    assert _extension(theirs) == {"reused_tokens": 0, "cached_tokens": 0}


def test_explicit_mode_foresees_its_breakpoint(running: Running) -> None:
    part = {"type": "input_text", "text": LONG, "prompt_cache_breakpoint": {"mode": "explicit"}}
    ask: dict[str, Any] = {
        "input": [{"role": "user", "content": [part]}],
        "extra_body": {"prompt_cache_options": {"mode": "explicit"}},
    }
    _create(running, **ask)
    wait_idle(running)
    end = running.sequences[-1].messages[0].part_ends[0]
    follow = {
        "input": [
            {"role": "user", "content": [part]},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "Where is the lamp?"},
        ],
        "extra_body": ask["extra_body"],
    }
    peek = _extension(running.client().responses.input_tokens.count(model=MODEL, **follow))
    assert peek == {"reused_tokens": end, "cached_tokens": end}
    real = _create(running, **follow).usage.input_tokens_details
    assert (real.model_extra["reused_tokens"], real.cached_tokens) == (end, end)


def test_the_count_object_validates(running: Running) -> None:
    body = {"model": MODEL, "input": "Hi"}
    got = httpx.post(f"{running.base_url}/v1/responses/input_tokens", json=body, timeout=60)
    assert got.status_code == 200
    check("TokenCountsResource", got.json())
    no_model = httpx.post(
        f"{running.base_url}/v1/responses/input_tokens", json={"input": "Hi"}, timeout=60
    )
    assert no_model.json()["input_tokens"] == got.json()["input_tokens"]


BAD: list[tuple[dict[str, Any], int, str | None, str | None]] = [
    ({"model": "gpt-nope", "input": "Hi"}, 404, "model", "model_not_found"),
    ({"input": "Hi", "frobnicate": 1}, 400, "frobnicate", "unknown_parameter"),
    ({"instructions": "Hi"}, 400, "input", "missing_required_parameter"),
    ({"input": []}, 400, "input", None),
    ({"input": "Hi", "reasoning": {"effort": "high"}}, 400, "reasoning", "unsupported_value"),
    ({"input": "Hi", "truncation": "auto"}, 400, "truncation", "unsupported_value"),
    ({"input": "Hi", "conversation": "conv_1"}, 400, "conversation", "unsupported_value"),
    ({"input": "Hi", "personality": "friendly"}, 400, "personality", "unsupported_value"),
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, 400, "tools[0].type", None),
    ({"input": "Hi", "previous_response_id": "resp_x"}, 400, "previous_response_id", None),
    ({"input": "Hi", "text": {"format": {"type": "xml"}}}, 400, "text.format", None),
]


@pytest.mark.parametrize(("body", "status", "param", "code"), BAD)
def test_errors_in_openai_shape(
    running: Running, body: dict[str, Any], status: int, param: str | None, code: str | None
) -> None:
    got = httpx.post(f"{running.base_url}/v1/responses/input_tokens", json=body, timeout=60)
    assert got.status_code == status, got.text
    error = got.json()["error"]
    assert (error["param"] or "").startswith(param or ""), error
    if code is not None:
        assert error["code"] == code, error
    check("ErrorResponse", got.json())


def test_sdk_raises_the_right_errors(running: Running) -> None:
    client = running.client()
    with pytest.raises(openai.NotFoundError):
        client.responses.input_tokens.count(model="gpt-nope", input="Hi")
    with pytest.raises(openai.BadRequestError):
        client.responses.input_tokens.count(model=MODEL, input="Hi", truncation="auto")
