"""A `kill -9` of the real server under load loses no ledger row of a request whose client
saw it finish."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import openai
import pytest

from promptcache.ledger.store import LEDGER_FILE, Ledger
from tests.api.helpers import MODEL, start_server

pytestmark = [pytest.mark.slow, pytest.mark.server]


def test_kill_9_under_load_loses_no_finished_row(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    seen: list[tuple[int, int]] = []  # (prompt, completion) tokens of responses received
    lock = threading.Lock()
    stop = threading.Event()

    def user(i: int) -> None:
        client = server.client()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                out = client.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"User {i}, question {n}: say hi."}],
                    max_tokens=4,
                    temperature=0,
                )
            except openai.APIError:
                return  # the server died under us
            assert out.usage is not None
            with lock:
                seen.append((out.usage.prompt_tokens, out.usage.completion_tokens))

    users = [threading.Thread(target=user, args=(i,)) for i in range(4)]
    for t in users:
        t.start()
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            with lock:
                if len(seen) >= 12:
                    break
            time.sleep(0.05)
        server.proc.kill()  # SIGKILL while requests are in flight
        server.proc.wait(30)
    finally:
        stop.set()
        for t in users:
            t.join(60)
        if server.proc.poll() is None:
            server.proc.kill()
    received = Counter(seen)
    rows = Ledger(tmp_path / "data" / LEDGER_FILE).rows("outcome = 'finished'")
    books = Counter((r.prompt_tokens, r.output_tokens) for r in rows)
    assert len(seen) >= 12
    assert not received - books, "a finished request the client saw is missing from the books"
    assert all(r.tenant == "tenant-a" and r.endpoint == "chat.completions" for r in rows)


def test_kill_9_keeps_stored_responses_and_both_databases_sound(tmp_path: Path) -> None:
    """Responses API traffic (stored), killed with SIGKILL mid-flight: both SQLite files pass
    `PRAGMA integrity_check`, and after a restart every response a client received is
    retrievable, unchanged."""
    server = start_server(tmp_path)
    got: dict[str, str] = {}  # response id -> output text, as clients received them
    lock = threading.Lock()
    stop = threading.Event()

    def user(i: int) -> None:
        client = server.client()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                out = client.responses.create(
                    model=MODEL, input=f"User {i}, note {n}: say ok.", max_output_tokens=4
                )
            except openai.APIError:
                return
            with lock:
                got[out.id] = out.output_text

    users = [threading.Thread(target=user, args=(i,)) for i in range(4)]
    for t in users:
        t.start()
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(got) < 12:
            time.sleep(0.05)
        server.proc.kill()
        server.proc.wait(30)
    finally:
        stop.set()
        for t in users:
            t.join(60)
    data = tmp_path / "data"
    for name in ("responses.sqlite3", LEDGER_FILE):
        db = sqlite3.connect(data / name)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", name
        db.close()
    again = start_server(tmp_path)
    try:
        client = again.client()
        assert len(got) >= 12
        for rid, text in got.items():
            assert client.responses.retrieve(rid).output_text == text
    finally:
        again.proc.kill()
        again.proc.wait(30)
