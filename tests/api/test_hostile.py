"""Hostile and extreme input, by hand: each gets a clear 4xx in its API's error shape (never
a 5xx, a hang or a dead engine), and afterwards the server answers and the KV pool's
integrity check holds. The limits are server settings (`api/limits.py`)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from promptcache.config import EngineConfig
from promptcache.model.loading.loader import LoadedModel
from promptcache.text.chat import render_chat
from tests.api.inprocess import MODEL, SMALL_LIMITS, Running, serve_in_process, wait_idle

pytestmark = pytest.mark.server

HI = [{"role": "user", "content": "hi"}]


def _post(running: Running, path: str, body: bytes | str, **headers: str) -> httpx.Response:
    h = {"content-type": "application/json", **headers}
    return httpx.post(f"{running.base_url}{path}", content=body, headers=h, timeout=120)


def _chat(**fields: Any) -> str:
    return json.dumps({"model": MODEL, "messages": HI, **fields})


def _messages(**fields: Any) -> str:
    return json.dumps({"model": MODEL, "messages": HI, "max_tokens": 2, **fields})


def _healthy(running: Running) -> None:
    """The server still answers, and once idle its KV pool passes the integrity check."""
    r = httpx.post(
        f"{running.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": HI, "max_tokens": 1},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    wait_idle(running)


CASES: list[tuple[str, str, str | None]] = [
    ("/v1/chat/completions", "[" * 100_000 + "]" * 100_000, None),  # deeply nested JSON
    ("/v1/chat/completions", _chat(temperature=float("nan")), "temperature"),
    ("/v1/chat/completions", _chat(temperature=float("inf")), "temperature"),
    ("/v1/chat/completions", _chat(max_tokens=0), "max_tokens"),
    ("/v1/chat/completions", _chat(max_tokens=-3), "max_tokens"),
    ("/v1/chat/completions", _chat(max_tokens=10**30), "messages"),  # more than fits
    ("/v1/chat/completions", _chat(top_p=0), "top_p"),
    ("/v1/chat/completions", _chat(stop=["x"] * 10_000), "stop"),
    ("/v1/chat/completions", _chat(messages=[]), "messages"),
    ("/v1/chat/completions", _chat(messages=[{"role": "tool", "content": "x"}]), None),
    ("/v1/responses", json.dumps({"model": MODEL, "input": [], "max_output_tokens": 5}), "input"),
    (
        "/v1/responses",
        json.dumps({"model": MODEL, "input": "hi", "max_output_tokens": 10**20}),
        "input",
    ),
    ("/v1/messages", _messages(stop_sequences=["x"] * 10_000), None),
    ("/v1/messages", _messages(max_tokens=10**30), None),
    ("/v1/messages", _messages(temperature=float("nan")), None),
    ("/v1/messages", "{" * 50_000, None),
]


@pytest.mark.parametrize(("path", "body", "param"), CASES)
def test_hostile_bodies_get_clean_400s(
    running_limits: Running, path: str, body: str, param: str | None
) -> None:
    r = _post(running_limits, path, body)
    assert r.status_code == 400, r.text
    payload = r.json()
    if path == "/v1/messages":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
    else:
        assert payload["error"]["type"] == "invalid_request_error"
        if param is not None:
            assert payload["error"]["param"] == param


def test_a_tiny_temperature_is_served(running_limits: Running) -> None:
    """Found by the fuzz test: temperature 1e-300 used to kill the engine thread."""
    for t in (1e-300, 5e-324):
        r = _post(running_limits, "/v1/chat/completions", _chat(temperature=t, max_tokens=3))
        assert r.status_code == 200, r.text
    _healthy(running_limits)


def test_invalid_utf8_and_not_json(running_limits: Running) -> None:
    for body in (b'{"model": "\xff\xfe", "messages": []}', b"\x00\x01\x02", b""):
        r = _post(running_limits, "/v1/chat/completions", body)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    _healthy(running_limits)


def test_body_size_limit_by_length_and_by_stream(running_limits: Running) -> None:
    big = _chat(messages=[{"role": "user", "content": "x" * (2 << 20)}])
    r = _post(running_limits, "/v1/chat/completions", big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks() -> Any:  # no Content-Length: the body streams in, chunked
        for _ in range(64):
            yield b" " * 32768

    r = httpx.post(
        f"{running_limits.base_url}/v1/messages",
        content=chunks(),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
    _healthy(running_limits)


def test_header_size_limit(running_limits: Running) -> None:
    r = httpx.get(f"{running_limits.base_url}/v1/models", headers={"x-padding": "p" * 9000})
    assert r.status_code == 431 and r.json()["error"]["code"] == "headers_too_large"


def test_message_count_limit(running_limits: Running) -> None:
    many = [{"role": "user", "content": "hi"}] * (SMALL_LIMITS.max_messages + 1)
    r = _post(running_limits, "/v1/chat/completions", _chat(messages=many))
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_messages"
    r = _post(running_limits, "/v1/messages", _messages(messages=many))
    assert r.status_code == 400 and r.json()["type"] == "error"


def test_a_prompt_of_exactly_the_context_length(running_limits: Running) -> None:
    tokenizer = running_limits.engine.tokenizer
    limit = running_limits.engine.max_model_len
    base = len(render_chat(tokenizer, [{"role": "user", "content": ""}]).token_ids)
    for extra in range(limit - base - 8, limit - base + 8):
        content = " a" * extra
        n = len(render_chat(tokenizer, [{"role": "user", "content": content}]).token_ids)
        if n == limit:
            break
    else:
        pytest.skip("no content renders to exactly the context length")
    full = _post(
        running_limits,
        "/v1/chat/completions",
        _chat(messages=[{"role": "user", "content": content}]),
    )
    assert full.status_code == 400
    assert full.json()["error"]["code"] == "context_length_exceeded"
    _healthy(running_limits)


def test_a_body_sent_too_slowly_is_refused_and_others_are_served(running_limits: Running) -> None:
    url = urlparse(running_limits.base_url)
    body = _chat(max_tokens=1).encode()
    with socket.create_connection((url.hostname, url.port)) as slow:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        slow.sendall(head.encode() + body[:10])  # then nothing: a stalled upload
        started = time.monotonic()
        _healthy(running_limits)  # others are answered meanwhile
        slow.settimeout(30)
        reply = slow.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 408"), reply[:200]
    assert time.monotonic() - started < 20
    assert "request_timeout" in reply


@pytest.fixture
def running_short(bundled: LoadedModel, tmp_path: Path) -> Iterator[Running]:
    """Small limits, and a request may run for 1 s at most."""
    limits = replace(SMALL_LIMITS, request_timeout_s=1.0)
    yield from serve_in_process(
        bundled, tmp_path, EngineConfig(kv_cache_bytes=64 << 20), limits=limits
    )


def test_a_request_past_the_total_timeout_is_stopped(running_short: Running) -> None:
    story = [{"role": "user", "content": "Tell me a very long story."}]
    long = {"model": MODEL, "messages": story, "max_tokens": 400, "temperature": 0}
    r = _post(running_short, "/v1/chat/completions", json.dumps(long))
    assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout"
    streamed = _post(running_short, "/v1/chat/completions", json.dumps({**long, "stream": True}))
    assert streamed.status_code == 200 and "request_timeout_s" in streamed.text
    r = _post(running_short, "/v1/messages", json.dumps(long))
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
    wait_idle(running_short)  # the stopped requests were aborted and freed their blocks
