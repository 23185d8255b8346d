"""Prewarms through the official SDKs: Responses' `prompt_cache_options.prewarm`, the
`prompt_cache_prewarm` extension on Chat Completions and Messages, streamed and not, and
`promptcache prewarm FILE` against the in-process server, and `prewarm_file` at the start
of a real `promptcache serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from promptcache.cli.main import main
from tests.api.helpers import start_server, stop_server
from tests.api.inprocess import MODEL, Running, wait_for

pytestmark = pytest.mark.server

DOC = (
    "Harbour rules. Vessels entering the basin keep to starboard, give way to pilots and "
    "report their draught to the harbour master before the second buoy. "
) * 40
PREWARM: Any = {"prewarm": True}


def _input(question: str = "When may a vessel enter?") -> list[Any]:
    return [
        {"role": "system", "content": DOC},
        {"role": "user", "content": question},
    ]


def _blocks(n: int) -> int:
    """Tokens of the full 16-token blocks of an `n`-token prompt (what a prewarm caches)."""
    return n // 16 * 16


def _reusable(n: int) -> int:
    """Tokens a request that samples can reuse of its own cached `n`-token prompt."""
    return (n - 1) // 16 * 16


def _reported(n: int) -> int:
    """OpenAI's rule: 0 under 1,024 tokens, else whole 128-token steps."""
    return 0 if n < 1024 else n // 128 * 128


def test_responses_prewarm_then_a_real_request_hits(running: Running) -> None:
    client = running.client()
    warm = client.responses.create(model=MODEL, input=_input(), prompt_cache_options=PREWARM)
    assert warm.status == "completed" and warm.output == [] and warm.output_text == ""
    u = warm.usage
    assert u is not None and u.output_tokens == 0 and u.total_tokens == u.input_tokens
    written = _blocks(u.input_tokens)
    assert written > 1024
    assert u.input_tokens_details.cached_tokens == 0
    assert u.input_tokens_details.cache_write_tokens == _reported(written)
    assert running.records[-1].finish_reason == "stop"
    assert running.records[-1].outcome.value == "finished"
    real = client.responses.create(model=MODEL, input=_input(), max_output_tokens=3)
    r = real.usage
    assert r is not None and r.input_tokens == u.input_tokens
    reused = min(written, _reusable(r.input_tokens))
    assert r.input_tokens_details.cached_tokens == _reported(reused)
    assert r.input_tokens_details.model_extra == {"reused_tokens": reused}
    assert r.input_tokens_details.cache_write_tokens == 0
    again = client.responses.create(model=MODEL, input=_input(), prompt_cache_options=PREWARM)
    a = again.usage
    assert a is not None and a.input_tokens_details.cache_write_tokens == 0
    assert a.input_tokens_details.model_extra == {"reused_tokens": written}
    rows = running.ledger.rows()
    assert [row.output_tokens for row in rows[-3:]] == [0, r.output_tokens, 0]


def test_responses_prewarm_keeps_the_retention_and_options(running: Running) -> None:
    client = running.client()
    options: Any = {"prewarm": True, "ttl": "12h"}
    warm = client.responses.create(
        model=MODEL, input=_input("Who gives way?"), prompt_cache_options=options
    )
    assert warm.prompt_cache_options is not None
    # The options applied, defaults filled in (the Response's schema requires both), no prewarm.
    applied = warm.prompt_cache_options.model_dump(exclude_none=True)
    assert applied == {"mode": "implicit", "ttl": "12h"}
    assert running.sequences[-1].cache.settings.retention.value == "12h"


def test_responses_explicit_breakpoint_prewarm(running: Running) -> None:
    client = running.client()
    mark: Any = {"mode": "explicit"}
    content = [{"type": "input_text", "text": DOC, "prompt_cache_breakpoint": mark}]
    messages: Any = [{"role": "system", "content": content}, {"role": "user", "content": "Hi"}]
    options: Any = {"mode": "explicit", "prewarm": True}
    warm = client.responses.create(model=MODEL, input=messages, prompt_cache_options=options)
    position = running.sequences[-1].cache.settings.breakpoints[0].position
    assert warm.output == []
    assert warm.usage is not None
    assert warm.usage.input_tokens_details.cache_write_tokens == position
    assert running.sequences[-1].num_computed == position  # to the breakpoint, no further
    real = client.responses.create(
        model=MODEL, input=messages, prompt_cache_options={"mode": "explicit"}, max_output_tokens=2
    )
    assert real.usage is not None
    assert real.usage.input_tokens_details.cached_tokens == position
    assert real.usage.input_tokens_details.cache_write_tokens == 0


def test_responses_prewarm_streamed(running: Running) -> None:
    client = running.client()
    events = list(
        client.responses.create(
            model=MODEL,
            input=_input("Who is the pilot?"),
            prompt_cache_options=PREWARM,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert kinds == ["response.created", "response.in_progress", "response.completed"]
    done = events[-1].response
    assert done.output == [] and done.usage is not None and done.usage.output_tokens == 0
    assert done.usage.input_tokens_details.cache_write_tokens > 1024


def test_chat_prewarm_extension(running: Running) -> None:
    client = running.client()
    messages: Any = _input("What is the draught?")
    warm = client.chat.completions.create(
        model=MODEL, messages=messages, extra_body={"prompt_cache_prewarm": True}
    )
    (choice,) = warm.choices
    assert (choice.message.content, choice.finish_reason) == ("", "stop")
    u = warm.usage
    assert u is not None and u.completion_tokens == 0
    assert u.prompt_tokens_details is not None
    written = _blocks(u.prompt_tokens)
    assert u.prompt_tokens_details.cache_write_tokens == _reported(written)
    real = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2)
    assert real.usage is not None and real.usage.prompt_tokens_details is not None
    reused = min(written, _reusable(real.usage.prompt_tokens))
    assert real.usage.prompt_tokens_details.cached_tokens == _reported(reused)
    assert real.usage.prompt_tokens_details.model_extra == {"reused_tokens": reused}
    assert real.usage.prompt_tokens_details.cache_write_tokens == 0
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"prompt_cache_prewarm": True},
        )
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices] == [None, "stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 0


def test_chat_prewarm_refuses_n(running: Running) -> None:
    body = {"model": MODEL, "messages": _input(), "n": 2, "prompt_cache_prewarm": True}
    got = httpx.post(f"{running.base_url}/v1/chat/completions", json=body, timeout=60)
    assert got.status_code == 400 and got.json()["error"]["param"] == "n"


def test_messages_prewarm_extension(running: Running) -> None:
    client = anthropic.Anthropic(base_url=running.base_url, api_key="k", max_retries=0)
    system: Any = [{"type": "text", "text": DOC, "cache_control": {"type": "ephemeral"}}]
    ask: Any = [{"role": "user", "content": "Name the buoy."}]
    extra = {"prompt_cache_prewarm": True, "temperature": 0}
    warm = client.messages.create(
        model=MODEL, max_tokens=4, system=system, messages=ask, extra_body=extra
    )
    position = running.sequences[-1].cache.settings.breakpoints[-1].position
    assert warm.content == [] and warm.stop_reason == "end_turn"
    assert (warm.usage.output_tokens, warm.usage.cache_creation_input_tokens) == (0, position)
    real = client.messages.create(
        model=MODEL, max_tokens=2, system=system, messages=ask, extra_body={"temperature": 0}
    )
    u = real.usage
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (position, 0)
    with client.messages.stream(
        model=MODEL, max_tokens=4, system=system, messages=ask, extra_body=extra
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert kinds == ["message_start", "message_delta", "message_stop"]
    assert final.content == [] and final.usage.cache_read_input_tokens == position


def test_cli_prewarm_file(running: Running, tmp_path: Path, capsys: Any) -> None:
    bodies = [
        {"input": _input("What is the first buoy?")},
        {"messages": _input("What is the second buoy?"), "model": MODEL},
    ]
    path = tmp_path / "prewarm.jsonl"
    path.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
    assert main(["prewarm", str(path), "--base-url", running.base_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    first, second = running.sequences[-2], running.sequences[-1]
    assert first.prefill_end is not None and second.prefill_end is not None
    n1, n2 = first.num_prompt_tokens, second.num_prompt_tokens
    hit = second.cache.hit_tokens or 0  # the shared system prompt, cached by the first
    assert 1024 < hit < first.prefill_end == _blocks(n1)
    written2 = _reported(_blocks(n2)) - _reported(hit)
    assert lines == [
        f"1\tresponses\tinput {n1}\twritten {_reported(_blocks(n1))}\tcached 0",
        f"2\tchat.completions\tinput {n2}\twritten {written2}\tcached {_reported(hit)}",
    ]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"prompt": "x"}]))
    assert main(["prewarm", str(bad), "--base-url", running.base_url]) == 2


@pytest.mark.slow
def test_prewarm_file_at_server_start(tmp_path: Path) -> None:
    path = tmp_path / "prewarm.json"
    path.write_text(json.dumps([{"input": _input("Which buoy is second?")}]))
    flags = ["--prewarm-file", str(path), "--prewarm-api-key", "sk-tenant-a"]
    server = start_server(tmp_path, *flags)
    try:
        wait_for(lambda: "prewarmed 1 requests at start" in server.log.read_text(), 300)
        assert "prewarm 1\tresponses\tinput" in server.log.read_text()
        client = server.client("sk-tenant-a")
        real = client.responses.create(
            model=MODEL, input=_input("Which buoy is second?"), max_output_tokens=2
        )
        assert real.usage is not None
        n = real.usage.input_tokens
        assert real.usage.input_tokens_details.cached_tokens == _reported(_reusable(n))
        assert real.usage.input_tokens_details.cache_write_tokens == 0
        other = server.client("sk-tenant-b").responses.create(
            model=MODEL, input=_input("Which buoy is second?"), max_output_tokens=2
        )
        assert other.usage is not None and other.usage.input_tokens_details.cached_tokens == 0
    finally:
        stop_server(server)


def test_prewarm_objects_match_the_published_schemas(running: Running) -> None:
    from tests.api.test_anthropic import check as check_anthropic
    from tests.api.test_openapi_schema import _sse, check

    ask = _input("Which schema?")
    with httpx.Client(base_url=running.base_url, timeout=120) as http:
        body = {"model": MODEL, "input": ask, "prompt_cache_options": {"prewarm": True}}
        check("Response", http.post("/v1/responses", json=body).json())
        for event in _sse(http.post("/v1/responses", json={**body, "stream": True}).text):
            check("ResponseStreamEvent", event)
        chat = {"model": MODEL, "messages": ask, "prompt_cache_prewarm": True}
        check("CreateChatCompletionResponse", http.post("/v1/chat/completions", json=chat).json())
        for chunk in _sse(http.post("/v1/chat/completions", json={**chat, "stream": True}).text):
            check("CreateChatCompletionStreamResponse", chunk)
        msg = {"model": MODEL, "max_tokens": 4, "messages": ask[1:], "prompt_cache_prewarm": True}
        check_anthropic("Message", http.post("/v1/messages", json=msg).json())
