"""An in-process server for tests: uvicorn in a thread serving the real app and engine
(bundled model, float32), with a spy on the engine's sequences, the end-of-request
records, and the usage ledger with its diagnosis. Helpers only; the fixtures that start
it (`running`, `running_keys`, ...) are in conftest.py."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from openai import OpenAI

from promptcache.api.app import create_app
from promptcache.api.auth import KeyRing
from promptcache.api.limits import Limits
from promptcache.api.store import ResponseStore
from promptcache.config import EngineConfig
from promptcache.engine.lifecycle import RequestHooks, RequestRecord
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.request import PreparedRequest
from promptcache.engine.sequence import Sequence
from promptcache.ledger.books import Books
from promptcache.ledger.diagnosis import PromptHistory, Rules
from promptcache.ledger.prices import ANTHROPIC_PRICES, OPENAI_PRICES
from promptcache.ledger.store import Ledger
from promptcache.model.loading.loader import LoadedModel
from tests.api.helpers import MODEL


@dataclass
class Running:
    base_url: str
    engine: LLMEngine
    sequences: list[Sequence]
    records: list[RequestRecord]
    ledger: Ledger

    def client(self, key: str = "k") -> OpenAI:
        return OpenAI(base_url=f"{self.base_url}/v1", api_key=key, max_retries=0, timeout=120)

    def metrics(self) -> str:
        return httpx.get(f"{self.base_url}/metrics", timeout=10).text


TENANT_KEYS = {"sk-a": "tenant-a", "sk-b": "tenant-b"}


class FakeClock:
    """Unix time that only moves when a test moves it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


SMALL_LIMITS = Limits(
    max_request_bytes=1 << 20,
    max_header_bytes=8 << 10,
    max_messages=100,
    max_stop_sequences=16,
    body_timeout_s=2.0,
    request_timeout_s=300.0,
)


def serve_in_process(
    bundled: LoadedModel,
    tmp_path: Path,
    config: EngineConfig,
    keys: KeyRing | None = None,
    clock: FakeClock | None = None,
    limits: Limits | None = None,
) -> Iterator[Running]:
    if config.disk_cache_dir is None:
        config = dataclasses.replace(config, disk_cache_dir=str(tmp_path / "kv-cache"))
    engine = LLMEngine(bundled, config, clock=clock or time.time)
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
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    rules = Rules(engine.policy, config.block_size)
    books = Books(
        ledger,
        MODEL,
        "gpt-5-mini",
        OPENAI_PRICES["gpt-5-mini"],
        rules=rules,
        decode=lambda ids: str(bundled.tokenizer.decode(ids)),
        history=PromptHistory(16),
        anthropic=("claude-sonnet-4-5", ANTHROPIC_PRICES["claude-sonnet-4-5"]),
    )
    keys = keys or KeyRing(None)
    app = create_app(
        engine, MODEL, keys, store, max_queue=8, hooks=hooks, books=books, limits=limits
    )
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
    yield Running(f"http://127.0.0.1:{port}", engine, sequences, records, ledger)
    server.should_exit = True
    thread.join(60)


def wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def wait_idle(running: Running, timeout: float = 120) -> None:
    """Wait for no request in flight and no KV block in use, then check the pool."""

    def idle() -> bool:
        health = httpx.get(f"{running.base_url}/health", timeout=10).json()
        return bool(health["requests_in_flight"] == 0 and running.engine.pool.num_in_use == 0)

    wait_for(idle, timeout)
    running.engine.check_integrity()
