"""Streams that survive a worker: a worker `kill -9`'d mid-stream behind the router, and
the client's stream (the `openai` SDK, Chat Completions, stream=True) goes on from another
worker with exactly the text of an undisturbed run, greedy and seeded alike; with no
healthy worker left it ends with the in-band error and the ledger row says so.

Three real workers (bundled model, float32) behind `promptcache router`; each test kills
the worker serving its stream (found by the router's in-flight gauge) after a few chunks.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from promptcache.ledger.store import LEDGER_FILE
from tests.api.helpers import MODEL, Server, start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

KEY = "internal-test-key"
MESSAGES: Any = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
MAX_TOKENS = 48
CHUNKS_BEFORE_KILL = 4  # the role chunk, then three with text


@dataclass
class Cluster:
    router: Server
    workers: list[Server]
    router_data: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("failover")
    workers = []
    for i in range(3):
        (tmp / f"w{i}").mkdir()
        workers.append(start_server(tmp / f"w{i}", "--internal-api-key", KEY, timeout=600))
    flags = [a for w in workers for a in ("--worker", w.base_url)]
    flags += ["--internal-api-key", KEY, "--health-interval-s", "60"]
    router = start_server(tmp, *flags, command="router", name="router", timeout=600)
    yield Cluster(router, workers, tmp / "router-data")
    for s in [router, *workers]:
        if s.proc.poll() is None:
            stop_server(s)


def _stream(cluster: Cluster, sampling: dict[str, Any]) -> Any:
    return cluster.router.client().chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
        **sampling,
    )


def _serving(cluster: Cluster) -> Server:
    """The worker with a request in flight (the test runs one stream at a time)."""
    text = httpx.get(f"{cluster.router.base_url}/metrics", timeout=10).text
    busy = re.findall(r'^promptcache_router_in_flight\{worker="([^"]+)"\} 1\.0$', text, re.M)
    assert len(busy) == 1, text
    return next(w for w in cluster.workers if w.base_url == busy[0])


def _kill(worker: Server) -> None:
    worker.proc.kill()  # SIGKILL: the stream's connection is cut mid-response
    worker.proc.wait(30)


def _read(cluster: Cluster, stream: Any, kill_others: bool = False) -> tuple[str, Any, Server]:
    """The stream's text and usage; kills the serving worker (and, if asked, every other
    live one first) after `CHUNKS_BEFORE_KILL` chunks."""
    text, usage, victim = "", None, None
    for i, chunk in enumerate(stream):
        if i == CHUNKS_BEFORE_KILL:
            victim = _serving(cluster)
            if kill_others:
                for w in cluster.workers:
                    if w is not victim and w.proc.poll() is None:
                        _kill(w)
            _kill(victim)
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert victim is not None
    return text, usage, victim


def _continuations(cluster: Cluster) -> float:
    text = httpx.get(f"{cluster.router.base_url}/metrics", timeout=10).text
    found = re.search(r"^promptcache_router_continuations_total (\S+)$", text, re.M)
    assert found is not None
    return float(found.group(1))


@pytest.mark.parametrize(
    "sampling",
    [{"temperature": 0}, {"temperature": 1.0, "seed": 1234}],
    ids=["greedy", "seeded"],
)
def test_a_worker_killed_mid_stream_is_continued_exactly(
    cluster: Cluster, sampling: dict[str, Any]
) -> None:
    undisturbed = cluster.router.client().chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=MAX_TOKENS,
        extra_body={"ignore_eos": True},
        **sampling,
    )
    expected = undisturbed.choices[0].message.content
    assert undisturbed.usage is not None and undisturbed.usage.completion_tokens == MAX_TOKENS
    before = _continuations(cluster)
    text, usage, victim = _read(cluster, _stream(cluster, sampling))
    assert victim.proc.returncode == -9
    assert _continuations(cluster) == before + 1  # the kill did cut the stream
    assert text == expected
    assert usage.completion_tokens == MAX_TOKENS
    assert usage.prompt_tokens == undisturbed.usage.prompt_tokens


def test_with_no_worker_left_the_stream_ends_in_band(cluster: Cluster) -> None:
    with pytest.raises(openai.APIError, match="no healthy worker left to continue it"):
        _read(cluster, _stream(cluster, {"temperature": 0}), kill_others=True)
    row = _last_row(cluster.router_data / LEDGER_FILE)
    assert row[0] == "failed" and "no healthy worker left" in row[1]
    assert row[2] >= 1  # the output that reached the client before the failure


def _last_row(path: Path) -> tuple[str, str, int]:
    deadline = time.time() + 30
    while time.time() < deadline:  # the ledger writes in the background
        with sqlite3.connect(path) as db:
            row = db.execute(
                "SELECT outcome, error, output_tokens FROM requests ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
        if row is not None and row[0] == "failed":
            return row[0], row[1], row[2]
        time.sleep(0.2)
    raise AssertionError(f"no failed row in {path}")
