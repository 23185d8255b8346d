"""The router in front of two real `promptcache serve` workers (bundled model, float32):
prefix affinity, spreading by `prompt_cache_key`, failover from a killed worker,
`previous_response_id` across workers, tenants, errors in OpenAI's shape, token counts
peeking at the cache of the worker a request would reach; and
`serve --workers 2` as one command."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.api.helpers import MODEL, Server, closed_by_server, start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

KEY = "internal-test-key"
DOC = " ".join(f"Rule {i}: keep the ledger balanced and the door locked." for i in range(110))


@dataclass
class Cluster:
    router: Server
    workers: list[Server]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    workers = []
    for i in range(2):
        (tmp / f"w{i}").mkdir()
        workers.append(start_server(tmp / f"w{i}", "--internal-api-key", KEY))
    flags = [a for w in workers for a in ("--worker", w.base_url)]
    # health checks are rare here, so a killed worker is found by a request (failover)
    flags += ["--internal-api-key", KEY, "--health-interval-s", "60"]
    router = start_server(tmp, *flags, command="router", name="router")
    yield Cluster(router, workers)
    for s in [router, *workers]:
        if s.proc.poll() is None:
            stop_server(s)


def _per_worker(router: Server) -> dict[str, float]:
    text = httpx.get(f"{router.base_url}/metrics", timeout=10).text
    found = re.findall(r'^promptcache_router_requests_total\{worker="([^"]+)"\} (\S+)$', text, re.M)
    return {w: float(n) for w, n in found}


def _ask(router: Server, key: str | None, question: str, tenant_key: str = "sk-tenant-a") -> int:
    out = router.client(tenant_key).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": DOC}, {"role": "user", "content": question}],
        max_tokens=2,
        temperature=0,
        extra_body={"prompt_cache_key": key} if key else None,
    )
    assert out.usage is not None and out.usage.prompt_tokens_details is not None
    return out.usage.prompt_tokens_details.cached_tokens or 0


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {w: n - before.get(w, 0) for w, n in after.items() if n - before.get(w, 0)}


def test_same_prefix_and_key_reach_one_worker_and_hit(cluster: Cluster) -> None:
    before = _per_worker(cluster.router)
    cached = [_ask(cluster.router, "alpha", f"Question {i}?") for i in range(4)]
    moved = _delta(before, _per_worker(cluster.router))
    assert list(moved.values()) == [4]  # one worker took all four
    assert cached[0] == 0 and all(c >= 1024 for c in cached[1:])  # ... and its cache hit


def test_different_keys_spread_over_workers(cluster: Cluster) -> None:
    before = _per_worker(cluster.router)
    for i in range(8):
        _ask(cluster.router, f"user-{i}", "Which rule is first?")
    moved = _delta(before, _per_worker(cluster.router))
    assert len(moved) == 2 and sum(moved.values()) == 8


def test_tenants_stay_isolated_across_workers(cluster: Cluster) -> None:
    _ask(cluster.router, "iso", "Is this cached?")
    assert _ask(cluster.router, "iso", "Is this cached?", tenant_key="sk-tenant-b") == 0
    assert _ask(cluster.router, "iso", "Is this cached?") >= 1024


def test_previous_response_id_across_workers(cluster: Cluster) -> None:
    client = cluster.router.client()
    first = client.responses.create(
        model=MODEL,
        input="My name is Ada. Say hi.",
        max_output_tokens=4,
        temperature=0,
        extra_body={"prompt_cache_key": "turn-1"},
    )
    before = _per_worker(cluster.router)
    for key in ("turn-2-a", "turn-2-b", "turn-2-c", "turn-2-d"):  # some land on the other worker
        second = client.responses.create(
            model=MODEL,
            input="What is my name?",
            previous_response_id=first.id,
            max_output_tokens=4,
            temperature=0,
            extra_body={"prompt_cache_key": key},
        )
        assert second.previous_response_id == first.id
        assert second.usage is not None and second.usage.input_tokens > first.usage.input_tokens
    assert len(_delta(before, _per_worker(cluster.router))) == 2
    assert client.responses.retrieve(first.id).id == first.id


def test_errors_keep_openai_shape(cluster: Cluster) -> None:
    with pytest.raises(openai.AuthenticationError) as auth:
        cluster.router.client("sk-wrong").models.list()
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as bad:
        cluster.router.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi " * 9000}], max_tokens=1
        )
    assert bad.value.code == "context_length_exceeded"
    resp = httpx.post(f"{cluster.workers[0].base_url}/v1/promptcache/generate", json={})
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"


def test_counts_peek_at_the_worker_the_request_would_reach(cluster: Cluster) -> None:
    client = cluster.router.client()
    ask: dict[str, Any] = {
        "model": MODEL,
        "instructions": "Counting comes first. " + DOC,  # a prefix no other test sent
        "input": "Which rule is last?",
        "extra_body": {"prompt_cache_key": "peek"},
    }
    before = client.responses.input_tokens.count(**ask)
    assert (before.model_extra or {})["promptcache"] == {"reused_tokens": 0, "cached_tokens": 0}
    client.responses.create(max_output_tokens=2, temperature=0, **ask)
    ask["input"] = "Which rule is first?"
    count = client.responses.input_tokens.count(**ask)
    peek = (count.model_extra or {})["promptcache"]
    assert peek["reused_tokens"] > 1024
    real = client.responses.create(max_output_tokens=2, temperature=0, **ask)
    assert real.usage is not None and count.input_tokens == real.usage.input_tokens
    details = real.usage.input_tokens_details
    assert (details.model_extra or {})["reused_tokens"] == peek["reused_tokens"]
    assert details.cached_tokens == peek["cached_tokens"]
    resp = httpx.post(f"{cluster.workers[0].base_url}/v1/promptcache/peek", json={})
    assert resp.status_code == 401


def test_tools_and_schemas_reach_the_workers(cluster: Cluster) -> None:
    from tests.api.tools_fixtures import WEATHER, WEATHER_SCHEMA

    client = cluster.router.client()
    messages: list[Any] = [{"role": "system", "content": DOC}, {"role": "user", "content": "Rome?"}]
    first = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
        parallel_tool_calls=False,
        extra_body={"prompt_cache_key": "agent"},
    )
    [call] = first.choices[0].message.tool_calls
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_SCHEMA)
    messages += [
        first.choices[0].message,
        {"role": "tool", "tool_call_id": call.id, "content": "20 C"},
    ]
    second = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=[WEATHER],
        temperature=0,
        max_tokens=4,
        extra_body={"prompt_cache_key": "agent"},
    )
    computed = first.usage.prompt_tokens + first.usage.completion_tokens - 1
    assert second.usage.prompt_tokens_details.model_extra["reused_tokens"] == computed // 16 * 16
    bad = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "object", "minProperties": "x"}},
    }
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL, messages=messages, response_format=bad, max_tokens=2
        )
    assert refused.value.code == "invalid_schema", refused.value.body
    assert refused.value.param == "response_format"


def test_a_killed_worker_is_failed_over(cluster: Cluster) -> None:
    victim = cluster.workers[1]
    keys = [f"fail-{i}" for i in range(6)]
    victim.proc.kill()  # SIGKILL: its connections are refused from now on
    victim.proc.wait(30)
    for key in keys:  # about half have the dead worker as home: retried on the live one
        _ask(cluster.router, key, "Still there?")
    health = httpx.get(f"{cluster.router.base_url}/health", timeout=10)
    assert health.status_code == 200
    text = httpx.get(f"{cluster.router.base_url}/metrics", timeout=10).text
    assert f'promptcache_router_worker_healthy{{worker="{victim.base_url}"}} 0.0' in text
    failovers = re.search(
        r'^promptcache_router_decisions_total\{kind="failover"\} (\S+)$', text, re.M
    )
    assert failovers is not None and float(failovers.group(1)) >= 1  # retried, not failed


def test_serve_with_workers_is_one_command(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--workers", "2", "--kv-cache-bytes", "256MiB")
    try:
        text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
        assert text.count("promptcache_router_worker_healthy{") == 2
        assert _ask(server, None, "Hello?") == 0
        assert (tmp_path / "data" / "worker-1" / "worker.log").exists()
    finally:
        stop_server(server)
    assert server.proc.returncode is not None


def test_the_router_and_its_workers_bound_their_connections(tmp_path: Path) -> None:
    """`header_timeout_s` and `max_connections` hold on the router's port and, passed on
    with the other flags, on each worker's (api/connections.py)."""
    flags = ["--workers", "1", "--kv-cache-bytes", "256MiB"]
    server = start_server(tmp_path, *flags, "--header-timeout-s", "3", "--max-connections", "8")
    try:
        found = re.search(r"started 1 workers: (http://\S+)", server.log.read_text())
        assert found is not None
        for url in (server.base_url, found.group(1)):
            host, port = url.removeprefix("http://").split(":")
            with socket.create_connection((host, int(port))) as silent:
                assert closed_by_server(silent, 3 + 15)  # the head deadline
        router = ("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))
        held = [socket.create_connection(router) for _ in range(8)]
        with socket.create_connection(router) as extra:
            opened = time.monotonic()
            assert closed_by_server(extra, 15)
            assert time.monotonic() - opened < 3  # sooner than the deadline: refused
        for sock in held:
            assert closed_by_server(sock, 3 + 15)
            sock.close()
        assert _ask(server, None, "Hello?") == 0  # served again once the deadline freed them
    finally:
        stop_server(server)


def test_a_prewarm_reaches_the_worker_its_request_does(cluster: Cluster) -> None:
    client = cluster.router.client()
    messages: Any = [  # a system prompt of its own: no earlier test cached any of it
        {"role": "system", "content": f"Prewarmed first. {DOC}"},
        {"role": "user", "content": "Prewarmed question?"},
    ]
    before = _per_worker(cluster.router)
    warm = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        extra_body={"prompt_cache_key": "pw", "prompt_cache_prewarm": True},
    )
    assert warm.choices[0].message.content == "" and warm.choices[0].finish_reason == "stop"
    u = warm.usage
    assert u is not None and u.completion_tokens == 0 and u.prompt_tokens_details is not None
    full = u.prompt_tokens // 16 * 16  # what the prewarm computed and cached
    assert u.prompt_tokens_details.cache_write_tokens == full // 128 * 128
    real = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=2, extra_body={"prompt_cache_key": "pw"}
    )
    r = real.usage
    assert r is not None and r.prompt_tokens_details is not None
    reused = min(full, (r.prompt_tokens - 1) // 16 * 16)
    assert r.prompt_tokens_details.model_extra == {"reused_tokens": reused}
    assert r.prompt_tokens_details.cached_tokens == reused // 128 * 128
    assert r.prompt_tokens_details.cache_write_tokens == 0
    assert list(_delta(before, _per_worker(cluster.router)).values()) == [2.0]
