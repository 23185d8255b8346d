"""Slow and vanishing clients: one that never reads its stream, one that sends its body a
byte at a time, a thousand idle connections. The server keeps answering others, frees the
abandoned requests' blocks, and holds bounded memory. (A client that disconnects mid-stream
is in test_errors.py; one that stalls its upload in test_hostile.py.)"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.api.inprocess import MODEL, Running, wait_idle

pytestmark = pytest.mark.server

HI = [{"role": "user", "content": "Tell me a very long story about the sea."}]


def _address(running: Running) -> tuple[str, int]:
    url = urlparse(running.base_url)
    assert url.hostname is not None and url.port is not None
    return url.hostname, url.port


def _request(body: dict[str, object]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def _served(running: Running) -> None:
    r = httpx.post(
        f"{running.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        timeout=60,
    )
    assert r.status_code == 200, r.text


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
def test_a_client_that_never_reads_its_stream(running: Running) -> None:
    body = {"model": MODEL, "messages": HI, "max_tokens": 300, "temperature": 0, "stream": True}
    with socket.create_connection(_address(running)) as mute:
        mute.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        mute.sendall(_request(body))
        for _ in range(3):
            _served(running)  # others are answered while it never reads
        wait_idle(running)  # its generation ended and its blocks went back
    _served(running)


def test_a_body_sent_byte_by_byte_within_the_timeout(running: Running) -> None:
    payload = _request(
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    )
    with socket.create_connection(_address(running)) as slow:
        for i in range(0, len(payload), 7):
            slow.sendall(payload[i : i + 7])
            time.sleep(0.002)
        slow.settimeout(60)
        reply = slow.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 200"), reply[:200]


def test_a_thousand_idle_connections(running: Running) -> None:
    before = _rss_bytes()
    idle = [socket.create_connection(_address(running)) for _ in range(1000)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        _served(running)
        assert time.monotonic() - started < 30
        grown = _rss_bytes() - before
        assert grown < 200 << 20, f"memory grew by {grown >> 20} MiB for 1,000 idle sockets"
    finally:
        for s in idle:
            s.close()
    _served(running)
    wait_idle(running)
