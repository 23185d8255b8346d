"""The request's path through the layers, in-process: a real server (uvicorn in a thread,
real engine on the bundled model) driven by the official SDK. What the API receives reaches
the engine's sequence; every request's end reaches the hook and `/metrics`, including one
that fails mid-stream."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types import CompletionUsage

from promptcache.cache.settings import Retention
from promptcache.engine.lifecycle import Outcome
from promptcache.ledger.prices import OPENAI_PRICES
from tests.api.inprocess import MODEL, Running, wait_for

pytestmark = pytest.mark.server


def test_cache_settings_reach_the_engine_sequence(running: Running) -> None:
    client = running.client()
    chat_out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        prompt_cache_key="chat-key",
        prompt_cache_retention="24h",
    )
    # The ledger row was committed before the response was sent: no waiting here.
    [chat_row] = running.ledger.rows()
    assert chat_out.usage is not None and chat_out.usage.prompt_tokens_details is not None
    assert (chat_row.outcome, chat_row.endpoint, chat_row.model) == (
        "finished",
        "chat.completions",
        MODEL,
    )
    assert chat_row.prompt_tokens == chat_out.usage.prompt_tokens
    assert chat_row.output_tokens == chat_out.usage.completion_tokens == 2
    assert chat_row.cached_tokens == chat_out.usage.prompt_tokens_details.cached_tokens
    assert (chat_row.retention, chat_row.prompt_cache_key) == ("24h", "chat-key")
    assert chat_row.cost_usd == pytest.approx(
        OPENAI_PRICES["gpt-5-mini"].cost(chat_row.prompt_tokens, 0, 0, 2)
    )
    stream = client.responses.create(
        model=MODEL, input="Hi", max_output_tokens=2, prompt_cache_key="resp-key", stream=True
    )
    for event in stream:
        if event.type == "response.completed":  # the row is durable before this event
            [_, resp_row] = running.ledger.rows()
            assert resp_row.endpoint == "responses" and resp_row.outcome == "finished"
            assert event.response.usage is not None
            assert resp_row.output_tokens == event.response.usage.output_tokens
    chat, resp = running.sequences
    assert chat.cache.settings.retention is Retention.EXTENDED
    assert chat.cache.settings.prompt_cache_key == "chat-key"
    assert chat.cache.settings.tenant == "default"
    assert resp.cache.settings.retention is Retention.IN_MEMORY  # the default
    assert resp.cache.settings.prompt_cache_key == "resp-key"
    # The rendered message boundaries travel too: the user's "Hi" is the last content.
    span = chat.messages[-1]
    assert span.role == "user" and span.content_end is not None
    tokenizer = running.engine.tokenizer
    assert tokenizer.decode(chat.prompt_token_ids[span.content_start : span.content_end]) == "Hi"
    wait_for(lambda: len(running.records) == 2)
    assert [r.endpoint for r in running.records] == ["chat.completions", "responses"]
    assert all(r.outcome is Outcome.FINISHED for r in running.records)
    assert running.records[0].request.cache.prompt_cache_key == "chat-key"
    assert running.records[0].cache is not None and running.records[0].cache.retention == "24h"


def test_rejected_and_aborted_requests_are_recorded(running: Running) -> None:
    client = running.client()
    with pytest.raises(openai.BadRequestError):  # longer than the context: rejected
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=10**6
        )
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=500,
        stream=True,
    )
    chunks = iter(stream)
    while not next(chunks).choices[0].delta.content:  # the role chunk comes first
        pass
    stream.close()  # the client goes away mid-stream
    wait_for(lambda: len(running.records) == 2)
    rejected, aborted = running.records
    assert rejected.outcome is Outcome.REJECTED and "context length" in (rejected.error or "")
    wait_for(lambda: len(running.ledger.rows()) == 2)
    rows = running.ledger.rows()
    assert [r.outcome for r in rows] == ["rejected", "aborted"]
    assert rows[0].cost_usd == 0.0 and rows[0].output_tokens == 0 and rows[0].error
    assert aborted.usage is not None
    assert rows[1].output_tokens == aborted.usage.completion_tokens >= 1
    assert aborted.outcome is Outcome.ABORTED and aborted.usage is not None
    assert 1 <= aborted.usage.completion_tokens < 500 and aborted.ttft_s is not None
    metrics = running.metrics()
    for outcome in ("rejected", "aborted"):
        line = (
            f'promptcache_requests_total{{endpoint="chat.completions",finish_reason="",'
            f'outcome="{outcome}"}} 1.0'
        )
        assert line in metrics


def test_a_request_that_fails_mid_stream_is_counted(running: Running) -> None:
    runner = running.engine.runner
    execute = runner.execute
    calls = 0

    def failing(scheduled: object) -> dict[int, int]:  # the third step fails
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("injected fault")
        return execute(scheduled)  # type: ignore[arg-type]

    runner.execute = failing  # type: ignore[method-assign]
    stream = running.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=50,
        stream=True,
    )
    with pytest.raises(openai.APIError, match="generation failed"):
        for _ in stream:
            pass
    wait_for(lambda: len(running.records) == 1)
    [failed] = running.records
    assert failed.outcome is Outcome.FAILED and "injected fault" in (failed.error or "")
    assert failed.usage is not None and failed.usage.completion_tokens == 2
    wait_for(lambda: len(running.ledger.rows()) == 1)
    [row] = running.ledger.rows()
    assert (row.outcome, row.output_tokens) == ("failed", 2) and "injected" in (row.error or "")
    line = (
        'promptcache_requests_total{endpoint="chat.completions",finish_reason="",'
        'outcome="failed"} 1.0'
    )
    assert line in running.metrics()
    health = httpx.get(f"{running.base_url}/health", timeout=10)
    assert health.status_code == 503 and "injected fault" in health.json()["detail"]


SYSTEM = "You answer questions about the solar system briefly and precisely. " * 84


def _chat_twice(running: Running) -> tuple[CompletionUsage, CompletionUsage]:
    client = running.client()
    outs = []
    for question in ("What is Mars?", "What is Venus?"):
        usage = client.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
            ],
            max_tokens=1,
            temperature=0,
        ).usage
        assert usage is not None and usage.prompt_tokens_details is not None
        outs.append(usage)
    return outs[0], outs[1]


def test_shared_prefix_below_1024_is_reused_but_reported_as_openai(running: Running) -> None:
    _, second = _chat_twice(running)
    assert 900 < second.prompt_tokens < 1024
    details = second.prompt_tokens_details
    assert details is not None and details.model_extra is not None
    reused = details.model_extra["reused_tokens"]
    assert reused >= 912 and reused % 16 == 0  # the whole shared system prompt, in blocks
    assert details.cached_tokens == 0  # OpenAI reports nothing below 1,024 tokens
    assert details.cache_write_tokens == 0
    metrics = running.metrics()
    assert f"promptcache_reused_tokens_total {float(reused)}" in metrics
    assert "promptcache_cached_tokens_total 0.0" in metrics


def test_exact_usage_rules_report_the_physical_reuse(running_exact: Running) -> None:
    first, second = _chat_twice(running_exact)
    details = second.prompt_tokens_details
    assert details is not None and details.model_extra is not None
    assert details.cached_tokens == details.model_extra["reused_tokens"] >= 912
    assert first.prompt_tokens_details is not None
    assert first.prompt_tokens_details.cache_write_tokens == first.prompt_tokens // 16 * 16


def test_usage_endpoint_shows_a_tenant_only_its_own(running_keys: Running) -> None:
    for key, n in (("sk-a", 2), ("sk-b", 1)):
        for _ in range(n):
            running_keys.client(key).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
            )
    rows = running_keys.ledger.rows()
    assert [r.tenant for r in rows] == ["tenant-a", "tenant-a", "tenant-b"]
    assert rows[0].api_key_id is not None and "sk-a" not in rows[0].api_key_id

    def get(key: str, **params: str) -> httpx.Response:
        return httpx.get(
            f"{running_keys.base_url}/v1/promptcache/usage",
            params=params,
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )

    mine = get("sk-b", by="tenant").json()
    assert mine["tenant"] == "tenant-b"
    assert [(g["group"], g["requests"]) for g in mine["data"]] == [("tenant-b", 1)]
    assert get("sk-b", tenant="tenant-a").status_code == 403
    assert get("sk-nope").status_code == 401
    everyone = get("sk-admin", by="tenant").json()
    assert [(g["group"], g["requests"]) for g in everyone["data"]] == [
        ("tenant-a", 2),
        ("tenant-b", 1),
    ]
    assert everyone["total"]["prompt_tokens"] == sum(r.prompt_tokens for r in rows)
    assert get("sk-admin", tenant="tenant-a").json()["total"]["requests"] == 2
    assert get("sk-a", by="week").status_code == 400


def test_queue_time_of_admitted_requests_reaches_metrics(running: Running) -> None:
    """Each admitted request's engine queue time (arrival -> first placement) travels on
    its outputs to the end record and into the histogram; a rejected one adds nothing."""
    client = running.client()
    for question in ("Hi", "Hello there"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=2
        )
    with pytest.raises(openai.BadRequestError):  # refused at submission: never queued
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 9000}], max_tokens=2
        )
    wait_for(lambda: len(running.records) == 3)
    waits = [seq.queue_time for seq in running.sequences]
    assert len(waits) == 2 and None not in waits
    assert [r.queue_s for r in running.records] == [*waits, None]
    metrics = running.metrics().splitlines()
    assert "promptcache_queue_time_seconds_count 2.0" in metrics
    total = next(m for m in metrics if m.startswith("promptcache_queue_time_seconds_sum "))
    assert float(total.split()[1]) == 0.0 + waits[0] + waits[1]
