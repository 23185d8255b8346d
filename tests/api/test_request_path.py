"""The request's path through the layers, in-process: a real server (uvicorn in a thread,
real engine on the bundled model) driven by the official SDK. What the API receives reaches
the engine's sequence; every request's end reaches the hook and `/metrics`, including one
that fails mid-stream."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from openai import OpenAI
from openai.types import CompletionUsage

from promptcache.api.app import create_app
from promptcache.api.auth import KeyRing
from promptcache.api.store import ResponseStore
from promptcache.cache.settings import Retention
from promptcache.config import EngineConfig
from promptcache.engine.lifecycle import Outcome, RequestHooks, RequestRecord
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.request import PreparedRequest
from promptcache.engine.sequence import Sequence
from promptcache.model.loader import LoadedModel

MODEL = "smollm2-135m-instruct"


@dataclass
class Running:
    base_url: str
    engine: LLMEngine
    sequences: list[Sequence]
    records: list[RequestRecord]

    def client(self) -> OpenAI:
        return OpenAI(base_url=f"{self.base_url}/v1", api_key="k", max_retries=0, timeout=120)

    def metrics(self) -> str:
        return httpx.get(f"{self.base_url}/metrics", timeout=10).text


@pytest.fixture
def running(bundled: LoadedModel, tmp_path: Path) -> Iterator[Running]:
    yield from _serve(bundled, tmp_path, EngineConfig(kv_cache_bytes=64 << 20))


@pytest.fixture
def running_exact(bundled: LoadedModel, tmp_path: Path) -> Iterator[Running]:
    yield from _serve(bundled, tmp_path, EngineConfig(kv_cache_bytes=64 << 20, usage_rules="exact"))


def _serve(bundled: LoadedModel, tmp_path: Path, config: EngineConfig) -> Iterator[Running]:
    engine = LLMEngine(bundled, config)
    sequences: list[Sequence] = []
    add = engine.add

    def spy(prepared: PreparedRequest) -> Sequence:  # the real `add`, remembering its result
        seq = add(prepared)
        sequences.append(seq)
        return seq

    engine.add = spy  # type: ignore[method-assign]
    hooks = RequestHooks()
    records: list[RequestRecord] = []
    hooks.subscribe(records.append)
    store = ResponseStore(tmp_path / "responses.sqlite3")
    app = create_app(engine, MODEL, KeyRing(None), store, max_queue=8, hooks=hooks)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield Running(f"http://127.0.0.1:{port}", engine, sequences, records)
    server.should_exit = True
    thread.join(60)


def _wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_cache_settings_reach_the_engine_sequence(running: Running) -> None:
    client = running.client()
    client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=2,
        prompt_cache_key="chat-key",
        prompt_cache_retention="24h",
    )
    client.responses.create(
        model=MODEL, input="Hi", max_output_tokens=2, prompt_cache_key="resp-key"
    )
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
    _wait_for(lambda: len(running.records) == 2)
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
    _wait_for(lambda: len(running.records) == 2)
    rejected, aborted = running.records
    assert rejected.outcome is Outcome.REJECTED and "context length" in (rejected.error or "")
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
    _wait_for(lambda: len(running.records) == 1)
    [failed] = running.records
    assert failed.outcome is Outcome.FAILED and "injected fault" in (failed.error or "")
    assert failed.usage is not None and failed.usage.completion_tokens == 2
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
