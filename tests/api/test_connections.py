"""Connection bounds (api/connections.py) on a bare ASGI app, under both of uvicorn's HTTP
implementations: a connection that owes a request head past `header_timeout_s` is closed,
one over `max_connections` is closed at once, and requests that arrive in time are served,
pipelined ones included. The flood against the real server is in test_connection_flood.py."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from promptcache.api.connections import ConnectionLimits, bounded_protocol
from tests.api.helpers import closed_by_server, free_port

pytestmark = [pytest.mark.server, pytest.mark.parametrize("http", ["httptools", "h11"])]

DEADLINE = 0.5  # header_timeout_s of the test servers, unless a test says otherwise
MARGIN = 5.0  # how long after the deadline a closing may take on a busy machine
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def answer_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def serving(http: str, deadline: float = DEADLINE, cap: int = 100) -> Iterator[tuple[str, int]]:
    """uvicorn in a thread on 127.0.0.1 with the bounded protocol; yields its address."""
    port = free_port()
    protocol = bounded_protocol(ConnectionLimits(deadline, cap), http)
    config = uvicorn.Config(
        answer_ok, host="127.0.0.1", port=port, http=protocol, lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = time.monotonic()
    while not server.started:
        assert time.monotonic() - started < 30, "server did not start"
        time.sleep(0.02)
    try:
        yield ("127.0.0.1", port)
    finally:
        server.should_exit = True
        thread.join(30)


def responses(sock: socket.socket, n: int) -> bytes:
    """Read until `n` complete "ok" answers have arrived."""
    sock.settimeout(10)
    data = b""
    while data.count(b"\r\n\r\nok") < n:
        chunk = sock.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_a_silent_connection_is_closed_at_the_deadline(http: str) -> None:
    with serving(http) as address, socket.create_connection(address) as silent:
        assert not closed_by_server(silent, DEADLINE / 3)  # no earlier than the deadline
        assert closed_by_server(silent, DEADLINE + MARGIN)


def test_a_head_trickled_a_byte_at_a_time_is_cut_at_the_deadline(http: str) -> None:
    with serving(http) as address, socket.create_connection(address) as slow:
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10_000
        stop = time.monotonic() + DEADLINE + MARGIN
        for byte in head:  # one byte per 20 ms: never a whole head before the deadline
            if select.select([slow], [], [], 0.02)[0] or time.monotonic() > stop:
                break
            try:
                slow.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
        assert closed_by_server(slow, 1.0)
        assert time.monotonic() <= stop + 1.0


def test_a_head_in_pieces_within_the_deadline_is_served(http: str) -> None:
    with serving(http) as address, socket.create_connection(address) as sock:
        for i in range(0, len(REQUEST), 10):
            sock.sendall(REQUEST[i : i + 10])
            time.sleep(0.02)
        assert responses(sock, 1).startswith(b"HTTP/1.1 200")


def test_after_a_response_the_next_head_is_owed_within_the_deadline(http: str) -> None:
    with serving(http) as address, socket.create_connection(address) as sock:
        sock.sendall(REQUEST)
        responses(sock, 1)
        sock.sendall(REQUEST)  # keep-alive: a second request is served
        responses(sock, 1)
        sock.sendall(b"GET / HTTP/1.1\r\n")  # cancels uvicorn's keep-alive timer
        assert closed_by_server(sock, DEADLINE + MARGIN)


def test_pipelined_requests_are_all_served(http: str) -> None:
    with serving(http) as address, socket.create_connection(address) as sock:
        sock.sendall(REQUEST * 3)
        assert responses(sock, 3).count(b"HTTP/1.1 200") == 3


def test_connections_over_the_cap_are_closed_at_once(http: str) -> None:
    # a deadline far beyond the margin: whatever closes within the margin was refused
    with serving(http, deadline=60, cap=4) as address:
        held = [socket.create_connection(address) for _ in range(4)]
        try:
            with socket.create_connection(address) as extra:
                assert closed_by_server(extra, MARGIN)
            assert not closed_by_server(held[0], 0.1)  # the four are still open
            held.pop().close()
            assert _served_soon(address)  # a freed place is taken by the next client
        finally:
            for sock in held:
                sock.close()


def _served_soon(address: tuple[str, int]) -> bool:
    stop = time.monotonic() + MARGIN
    while time.monotonic() < stop:
        with socket.create_connection(address) as sock:
            sock.sendall(REQUEST)
            sock.settimeout(MARGIN)
            try:
                if sock.recv(4096).startswith(b"HTTP/1.1 200"):
                    return True
            except ConnectionResetError:
                pass
        time.sleep(0.05)
    return False
