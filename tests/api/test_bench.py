"""`promptcache bench` against a real server: its counts are the server's own usage, and
what goes wrong (no server, 4xx, a stream cut mid-way) is reported, never a crash."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptcache.cli.main import main
from tests.api.helpers import MODEL, Server, free_port

COUNTERS = ("prompt_tokens", "cached_tokens", "completion_tokens")


def _counters(server: Server) -> dict[str, float]:
    text = server.http().get("/metrics").text
    values = {}
    for line in text.splitlines():
        for name in COUNTERS:
            if line.startswith(f"promptcache_{name}_total "):
                values[name] = float(line.split()[1])
    return values


def _bench(base_url: str, out: Path, *args: str) -> tuple[int, dict[str, Any]]:
    argv = ["bench", "--base-url", base_url, "--out", str(out), "--no-progress", *args]
    rc = main(argv)
    doc = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {}
    return rc, doc


@pytest.mark.server
def test_counts_equal_the_servers_usage(server: Server, tmp_path: Path) -> None:
    before = _counters(server)
    rc, doc = _bench(
        f"{server.base_url}/v1",
        tmp_path,
        *("--api-key", "sk-tenant-a", "--workload", "shared-prefix", "--small"),
        *("--groups", "2", "--prompts-per-group", "2", "--question-tokens", "16"),
        *("--output-tokens", "4", "--seed", "7"),
    )
    after = _counters(server)
    assert rc == 0
    s, records = doc["summary"], doc["records"]
    assert [r["tag"] for r in records] == ["g0/p0", "g1/p0", "g0/p1", "g1/p1"]
    assert [r["cached_tokens"] for r in records] == [0, 0, 1024, 1024]
    assert (s["requests"], s["ok"], s["errors"]) == (4, 4, {})
    for name in COUNTERS:
        assert s[name] == after[name] - before[name] == sum(r[name] for r in records)
    assert s["hit_rate"] == pytest.approx(2048 / s["prompt_tokens"])
    assert all(r["completion_tokens"] == 4 and r["ttft"] > 0 for r in records)
    for f in ("bench.md", "ttft_cdf.png", "ttft_vs_cached.png", "throughput.png", "summary.png"):
        assert (tmp_path / f).stat().st_size > 0


@pytest.mark.server
def test_multi_turn_history_hits(server: Server, tmp_path: Path) -> None:
    rc, doc = _bench(
        f"{server.base_url}/v1",
        tmp_path,
        *("--api-key", "sk-tenant-b", "--workload", "multi-turn", "--users", "2"),
        *("--rounds", "2", "--question-tokens", "16", "--output-tokens", "4", "--seed", "7"),
    )
    assert rc == 0
    records = doc["records"]
    assert [(r["session"], r["round"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    cached = [r["cached_tokens"] for r in records]
    # u0's first round writes the shared system prompt, u1's first round hits only that;
    # a second round hits at least its whole first round (its prompt is a prefix of it)
    assert (cached[0], cached[2]) == (0, 1024)
    for first, second in ((records[0], records[1]), (records[2], records[3])):
        assert second["prompt_tokens"] > first["prompt_tokens"] + 16  # history carried
        assert second["cached_tokens"] >= first["prompt_tokens"] // 128 * 128


@pytest.mark.server
def test_http_errors_are_counted(server: Server, tmp_path: Path) -> None:
    rc, doc = _bench(
        f"{server.base_url}/v1",
        tmp_path / "key",
        *("--api-key", "sk-wrong", "--model", MODEL, "--workload", "no-reuse"),
        *("--num-prompts", "2", "--system-tokens", "8", "--question-tokens", "8"),
    )
    assert rc == 1 and doc["summary"]["errors"] == {"http_401": 2}
    assert "Incorrect API key" in doc["records"][0]["error_detail"]
    rc, doc = _bench(
        f"{server.base_url}/v1",
        tmp_path / "model",
        *("--api-key", "sk-tenant-a", "--model", "no-such-model", "--workload", "seed"),
        *("--num-prompts", "1", "--system-tokens", "8"),
    )
    assert rc == 1 and doc["summary"]["errors"] == {"http_404": 1}


def test_no_server_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    rc, doc = _bench(url, tmp_path, "--model", "m", "--workload", "seed", "--num-prompts", "2")
    assert rc == 1 and doc["summary"]["errors"] == {"connection": 2}
    rc, _ = _bench(url, tmp_path / "discover", "--workload", "seed")
    assert rc == 2 and "cannot list models" in capsys.readouterr().err


CHUNK = (
    'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m",'
    '"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
)


@pytest.fixture
def cutting_server() -> Iterator[str]:
    """Answers every request with one streamed chunk, then drops the connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                _read_request(conn)
                body = CHUNK.encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                    + f"{len(body):x}\r\n".encode()
                    + body
                    + b"\r\n"
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v1"
    listener.close()


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)


def test_dropped_stream_is_reported(cutting_server: str, tmp_path: Path) -> None:
    rc, doc = _bench(
        cutting_server,
        tmp_path,
        *("--model", "m", "--workload", "seed", "--num-prompts", "2", "--system-tokens", "8"),
    )
    assert rc == 1 and doc["summary"]["errors"] == {"dropped": 2}
    assert doc["records"][0]["chunk_times"]  # the chunk before the cut was seen


@pytest.mark.server
def test_open_loop_and_request_bound(server: Server, tmp_path: Path) -> None:
    tiny = ("--system-tokens", "8", "--question-tokens", "8", "--output-tokens", "2")
    rc, doc = _bench(
        f"{server.base_url}/v1",
        tmp_path / "rate",
        *("--api-key", "sk-tenant-a", "--workload", "no-reuse", "--num-prompts", "4"),
        *("--rate", "20", "--seed", "3", *tiny),
    )
    starts = [r["start"] for r in doc["records"]]
    assert rc == 0 and doc["summary"]["ok"] == 4 and doc["config"]["options"]["rate"] == 20
    assert starts == sorted(starts) and starts[-1] > starts[0]  # Poisson arrivals, not at once
    rc, doc = _bench(
        f"{server.base_url}/v1",
        tmp_path / "bound",
        *("--api-key", "sk-tenant-a", "--workload", "no-reuse", "--num-prompts", "4"),
        *("--requests", "2", "--concurrency", "2", *tiny),
    )
    assert rc == 0 and doc["summary"]["requests"] == 2


@pytest.mark.server
def test_long_tail_sends_the_retention(server: Server, tmp_path: Path) -> None:
    from promptcache.ledger.store import LEDGER_FILE, read_rows

    ledger = server.log.parent / "data" / LEDGER_FILE
    before = len(read_rows(ledger))
    args = ("--workload", "long-tail", "--small", "--num-prompts", "2", "--rounds", "2")
    rc, doc = _bench(
        f"{server.base_url}/v1", tmp_path, *args, "--retention", "24h", "--api-key", "sk-tenant-a"
    )
    assert rc == 0 and doc["summary"]["ok"] == 4
    rows = read_rows(ledger)[before:]
    assert [r.retention for r in rows] == ["24h"] * 4
    assert [r.cached_tokens > 0 for r in rows] == [False, False, True, True]  # revisits hit
