"""A `kill -9` of the real server under load loses no ledger row of a request whose client
saw it finish."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import openai

from promptcache.ledger.store import LEDGER_FILE, Ledger
from tests.api.conftest import MODEL, start_server


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
