"""Bad input gets OpenAI's error shape and status code, never a crash."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.api.helpers import MODEL, Server, start_server, stop_server

pytestmark = pytest.mark.server

AUTH = {"Authorization": "Bearer sk-tenant-a"}
CHAT = "/v1/chat/completions"
GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _error(
    resp: httpx.Response, status: int, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["type"] == type_
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return dict(err)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({**GOOD, "messages": []}, "invalid_value", "messages"),
        ({"model": MODEL}, "missing_required_parameter", "messages"),
        ({**GOOD, "temperature": "hot"}, "invalid_value", "temperature"),
        ({**GOOD, "temperature": 3}, "invalid_value", "temperature"),
        ({**GOOD, "logit_bias": {"x": 2}}, "invalid_value", "logit_bias"),
        ({**GOOD, "logit_bias": {"1": 200}}, "invalid_value", "logit_bias"),
        ({**GOOD, "logit_bias": {"99999999": 1}}, None, "logit_bias"),
        ({**GOOD, "frequency_penalty": 3}, "invalid_value", "frequency_penalty"),
        ({**GOOD, "top_logprobs": 3}, "invalid_value", "top_logprobs"),
        ({**GOOD, "logprobs": True, "top_logprobs": 21}, "invalid_value", "top_logprobs"),
        ({**GOOD, "store": True}, "unsupported_value", "store"),
        ({**GOOD, "bogus": 1}, "unknown_parameter", "bogus"),
        ({**GOOD, "n": 0}, "invalid_value", "n"),
        ({**GOOD, "prompt_cache_retention": "forever"}, "invalid_value", "prompt_cache_retention"),
        ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, None, "stop"),
        (
            {**GOOD, "messages": [{"role": "user", "content": "x " * 9000}]},
            "context_length_exceeded",
            "messages",
        ),
        ({**GOOD, "max_tokens": 9000}, "context_length_exceeded", "messages"),
    ],
)
def test_chat_bad_requests(
    server: Server, body: dict[str, Any], code: str | None, param: str
) -> None:
    with server.http() as http:
        _error(http.post(CHAT, json=body, headers=AUTH), 400, "invalid_request_error", code, param)


def test_malformed_json_unknown_model_and_auth(server: Server) -> None:
    with server.http() as http:
        bad = http.post(
            CHAT, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
        )
        _error(bad, 400, "invalid_request_error", "invalid_json")
        _error(
            http.post(CHAT, json={**GOOD, "model": "gpt-9"}, headers=AUTH),
            404,
            "invalid_request_error",
            "model_not_found",
            "model",
        )
        _error(http.post(CHAT, json=GOOD), 401, "invalid_request_error", "missing_api_key")
        _error(
            http.post(CHAT, json=GOOD, headers={"Authorization": "Bearer nope"}),
            401,
            "invalid_request_error",
            "invalid_api_key",
        )
        _error(
            http.post(
                "/v1/responses",
                json={"model": MODEL, "input": "hi", "previous_response_id": "resp_missing"},
                headers=AUTH,
            ),
            400,
            "invalid_request_error",
            "previous_response_not_found",
            "previous_response_id",
        )
        _error(
            http.get("/v1/responses/resp_missing", headers=AUTH),
            404,
            "invalid_request_error",
            "not_found",
        )
        _error(
            http.post(
                "/v1/responses", json={"model": MODEL, "input": "hi", "frobnicate": 1}, headers=AUTH
            ),
            400,
            "invalid_request_error",
            "unknown_parameter",
        )
        # The server is still healthy and answers after all of that.
        assert http.post(CHAT, json=GOOD, headers=AUTH).status_code == 200


@pytest.fixture(scope="module")
def small_queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("queue"), "--max-queue", "1")
    yield s
    stop_server(s)


def test_overload_is_429_and_disconnect_frees_blocks(small_queue: Server) -> None:
    long = {
        **GOOD,
        "max_tokens": 400,
        "temperature": 0,  # greedy: a 400-token story, never an early stop
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
    }
    started = threading.Event()

    def hold() -> None:
        with small_queue.http() as http, http.stream("POST", CHAT, json=long, headers=AUTH) as resp:
            for i, _ in enumerate(resp.iter_lines()):
                if i == 2:
                    started.set()
                if i == 6:
                    return  # disconnect mid-stream

    t = threading.Thread(target=hold)
    t.start()
    assert started.wait(120)
    with small_queue.http() as http:
        full = http.post(CHAT, json=GOOD, headers=AUTH)
        _error(full, 429, "rate_limit_error", "server_overloaded")
        assert (full.headers["retry-after"], full.headers["retry-after-ms"]) == ("1", "1000")
    t.join(120)
    with small_queue.http() as http:
        deadline = time.time() + 30
        while time.time() < deadline:
            health = http.get("/health").json()
            metrics = http.get("/metrics").text
            if health["requests_in_flight"] == 0 and "promptcache_kv_blocks_in_use 0.0" in metrics:
                break
            time.sleep(0.2)
        assert health["requests_in_flight"] == 0
        assert "promptcache_kv_blocks_in_use 0.0" in metrics
        assert "promptcache_requests_aborted 1.0" in metrics
        assert http.post(CHAT, json=GOOD, headers=AUTH).status_code == 200


def test_non_streamed_request_aborts_when_its_client_leaves(small_queue: Server) -> None:
    body = {
        **GOOD,
        "max_tokens": 400,
        "temperature": 0,  # greedy: a 400-token story, never an early stop
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
    }
    client = httpx.Client(base_url=small_queue.base_url, timeout=1.5)
    with client as http, pytest.raises(httpx.ReadTimeout):
        http.post(CHAT, json=body, headers=AUTH)  # the client gives up and disconnects
    with small_queue.http() as http:
        deadline = time.time() + 20
        while time.time() < deadline:
            idle = http.get("/health").json()["requests_in_flight"] == 0
            metrics = http.get("/metrics").text
            if idle and "promptcache_kv_blocks_in_use 0.0" in metrics:
                break
            time.sleep(0.2)
        assert idle and "promptcache_kv_blocks_in_use 0.0" in metrics
        assert "promptcache_requests_aborted 2.0" in metrics


@pytest.fixture(scope="module")
def quick_retry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(
        tmp_path_factory.mktemp("retry"), "--max-queue", "1", "--retry-after-s", "0.25"
    )
    yield s
    stop_server(s)


def test_a_full_queue_says_when_to_retry_and_the_sdk_waits_that_long(
    quick_retry: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 429 for a full queue carries `Retry-After` (whole seconds) and `retry-after-ms`
    (the `retry_after_s` setting); the official SDK retries after exactly that wait
    instead of its own backoff."""
    small_queue = quick_retry
    long = {
        **GOOD,
        "max_tokens": 400,
        "temperature": 0,  # greedy: a 400-token story, never an early stop
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
    }
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with small_queue.http() as http, http.stream("POST", CHAT, json=long, headers=AUTH) as resp:
            for i, _ in enumerate(resp.iter_lines()):
                if i == 2:
                    holding.set()
                    release.wait(120)
                    return

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(120)
    with small_queue.http() as http:
        full = http.post(CHAT, json=GOOD, headers=AUTH)
    assert full.status_code == 429
    assert (full.headers["retry-after"], full.headers["retry-after-ms"]) == ("1", "250")
    client = small_queue.client().with_options(max_retries=2)
    waits: list[float] = []  # the waits the SDK chose before each retry
    chosen = client._calculate_retry_timeout

    def recorded(*args: Any, **kwargs: Any) -> float:
        waits.append(chosen(*args, **kwargs))
        return waits[-1]

    monkeypatch.setattr(client, "_calculate_retry_timeout", recorded)
    try:
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model=MODEL, messages=GOOD["messages"], max_tokens=2)
    finally:
        release.set()
        t.join(120)
    assert err.value.status_code == 429 and err.value.code == "server_overloaded"
    assert waits == [0.25, 0.25]  # two retries, each after the server's wait


def _wait_idle(server: Server) -> None:
    """Until the server holds no request (a held stream's abort takes a moment)."""
    with server.http() as http:
        deadline = time.time() + 60
        while http.get("/health").json()["requests_in_flight"] and time.time() < deadline:
            time.sleep(0.05)
        assert http.get("/health").json()["requests_in_flight"] == 0


def _rejected_chats(server: Server) -> float:
    line = (
        'promptcache_requests_total{endpoint="chat.completions",finish_reason="",'
        'outcome="rejected"} '
    )
    with server.http() as http:
        metrics = http.get("/metrics").text.splitlines()
    return next((float(m[len(line) :]) for m in metrics if m.startswith(line)), 0.0)


def test_the_sdk_retries_after_the_servers_wait_and_then_succeeds(
    quick_retry: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overload, end to end with the official SDK: its first try gets a 429, it waits the
    server's `retry-after-ms` (0.25 s) instead of its own backoff, and its one retry,
    sent once the queue has room, is answered."""
    _wait_idle(quick_retry)
    long = {**GOOD, "max_tokens": 400, "temperature": 0, "stream": True}
    long["messages"] = [{"role": "user", "content": "Tell me a very long story."}]
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # fills the one-request queue until released, then hangs up
        with quick_retry.http() as http, http.stream("POST", CHAT, json=long, headers=AUTH) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i == 2:
                    holding.set()
                    release.wait(120)
                    return

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(120)
    rejected_before = _rejected_chats(quick_retry)
    client = quick_retry.client().with_options(max_retries=3)
    waits: list[float] = []  # the SDK's wait before each retry
    chosen = client._calculate_retry_timeout

    def recorded(*args: Any, **kwargs: Any) -> float:
        waits.append(chosen(*args, **kwargs))
        release.set()  # the queue empties before the retry is sent
        t.join(120)
        _wait_idle(quick_retry)
        return waits[-1]

    monkeypatch.setattr(client, "_calculate_retry_timeout", recorded)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=GOOD["messages"], max_tokens=2
        )
    finally:
        release.set()
        t.join(120)
    assert waits == [0.25]  # one retry, after exactly the server's wait
    assert raw.http_request.headers["x-stainless-retry-count"] == "1"  # the answered try
    assert raw.status_code == 200 and raw.parse().usage is not None
    assert _rejected_chats(quick_retry) == rejected_before + 1  # the server saw one 429
