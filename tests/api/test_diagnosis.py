"""Miss diagnosis: each reason produced by a constructed pair of requests through the real
in-process server, read back over HTTP; tenants never see each other's."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from tests.api.inprocess import MODEL, Running

pytestmark = pytest.mark.server

DOC = "The solar system has eight planets that orbit the Sun on nearly flat orbits. " * 70
OTHER = "Rivers carry water from mountains to the sea and shape the valleys they pass. " * 70


def _ask(running: Running, system: str, question: str = "Why?", key: str = "k") -> str:
    out = running.client(key).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=1,
        temperature=0,
    )
    return out.id


def _diagnosis(running: Running, request_id: str, key: str = "k") -> Any:
    url = f"{running.base_url}/v1/promptcache/requests/{request_id}/cache"
    resp = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _reason(running: Running, request_id: str) -> str:
    return str(_diagnosis(running, request_id)["diagnosis"]["reason"])


def test_reasons(running: Running) -> None:
    first = _ask(running, DOC)
    assert _reason(running, first) == "no_prefix"  # this tenant's first prompt
    body = _diagnosis(running, _ask(running, DOC, "How many?"))
    assert body["diagnosis"]["reason"] == "rounded"  # the whole shared part, in 128s
    assert body["usage"]["cached_tokens"] < body["usage"]["reused_tokens"]
    assert body["usage"]["cached_tokens"] % 128 == 0
    assert _reason(running, _ask(running, "Be brief.")) == "below_minimum"
    # A timestamp at the start of the system prompt: diverged there, flagged as dynamic.
    _ask(running, "2026-11-27T10:15:02Z. " + DOC)
    later = _diagnosis(running, _ask(running, "2026-11-27T10:16:40Z. " + DOC))["diagnosis"]
    assert later["reason"] == "diverged"
    assert later["message_index"] == 0 and later["message_role"] == "system"
    assert "timestamp" in later["dynamic"]
    assert "10:16:40" in later["this_text"] and "10:15:02" in later["earlier_text"]
    assert later["diverged_at"] < 24


def test_evicted(running: Running) -> None:
    # The pool holds 1,456 tokens: a second long prompt evicts most of the first's blocks.
    _ask(running, DOC)
    _ask(running, OTHER)
    again = _diagnosis(running, _ask(running, DOC, "And then?"))["diagnosis"]
    assert again["reason"] == "evicted" and again["evicted_at"] is not None
    assert 0 < again["reused_tokens"] < again["prompt_tokens"] - 16


def test_waited(running: Running) -> None:
    ids: list[str] = []
    threads = [
        threading.Thread(target=lambda q=q: ids.append(_ask(running, OTHER, q)))
        for q in ("One?", "Two?")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    reasons = sorted(_reason(running, i) for i in ids)
    assert reasons == ["no_prefix", "waited"]


def test_hit_under_exact_rules(running_exact: Running) -> None:
    _ask(running_exact, DOC)
    assert _reason(running_exact, _ask(running_exact, DOC, "How many?")) == "hit"


def test_tenants_never_see_each_others_diagnosis(running_keys: Running) -> None:
    a = _ask(running_keys, DOC, key="sk-a")
    b = _ask(running_keys, DOC, key="sk-b")  # same prompt, other tenant
    mine = _diagnosis(running_keys, b, key="sk-b")
    assert mine["diagnosis"]["reason"] == "no_prefix"  # tenant-a's prompt is not its history
    assert mine["usage"]["reused_tokens"] == 0
    url = f"{running_keys.base_url}/v1/promptcache/requests/{a}/cache"
    other = httpx.get(url, headers={"Authorization": "Bearer sk-b"}, timeout=10)
    assert other.status_code == 404  # as if it did not exist
    assert _diagnosis(running_keys, a, key="sk-admin")["request_id"] == a


def test_tools_changed(running: Running) -> None:
    from tests.api.tools_fixtures import CLOCK, WEATHER

    def ask(tools: list[Any]) -> str:
        out = running.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": DOC}, {"role": "user", "content": "Why?"}],
            tools=tools,
            max_tokens=1,
            temperature=0,
        )
        return out.id

    ask([WEATHER])
    found = _diagnosis(running, ask([WEATHER, CLOCK]))["diagnosis"]
    assert found["reason"] == "tools_changed" and "tools" in found["summary"]
    # The same tools sent with their keys in another order are the same prefix: a hit.
    reordered = {"function": dict(reversed(list(WEATHER["function"].items()))), "type": "function"}
    assert _reason(running, ask([reordered, CLOCK])) in ("hit", "rounded")
    # A description is part of the tools the prompt shows (a date put in one, say).
    dated = {"type": "function", "function": {**CLOCK["function"], "description": "7 Dec."}}
    assert _reason(running, ask([WEATHER, dated])) == "tools_changed"


def test_format_changed(running: Running) -> None:
    from tests.api.tools_fixtures import CLOCK_SCHEMA, WEATHER, WEATHER_SCHEMA

    def ask(schema: dict[str, Any] | None, name: str = "answer") -> str:
        fmt: Any = {"type": "text"}
        if schema is not None:
            fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
        out = running.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": DOC}, {"role": "user", "content": "Why?"}],
            tools=[WEATHER],
            response_format=fmt,
            max_tokens=1,
            temperature=0,
        )
        return out.id

    ask(WEATHER_SCHEMA)
    found = _diagnosis(running, ask(CLOCK_SCHEMA))["diagnosis"]
    assert found["reason"] == "format_changed" and "format" in found["summary"]
    assert found["message_index"] == 0 and found["this_text"] != found["earlier_text"]
    # The same schema sent with its keys in another order is the same prefix: a hit.
    assert _reason(running, ask(dict(reversed(list(CLOCK_SCHEMA.items()))))) in ("hit", "rounded")
    assert _reason(running, ask(CLOCK_SCHEMA, "reply")) == "format_changed"  # its name, shown
    assert _reason(running, ask(None)) == "format_changed"  # no format shown any more
