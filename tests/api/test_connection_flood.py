"""A connection flood against a real `promptcache serve` (bundled model): 200 clients that
trickle a request head a byte at a time and 2,000 that never send a request line, against
`max_connections` 1,024 and `header_timeout_s` 2. Every one of them is closed by the
server, by the deadline or at once by the cap; a normal client (the `openai` SDK on its
keep-alive connection) is served all along, a new one after the flood; and the server's
resident memory comes back to near where it was. Figures: docs/design/reliability.md."""

from __future__ import annotations

import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai import OpenAI

from tests.api.helpers import MODEL, Server, start_server, stop_server

pytestmark = [pytest.mark.server, pytest.mark.slow]

DEADLINE = 2.0  # the server's header_timeout_s
CAP = 1024  # the server's max_connections
SILENT = 2000
TRICKLING = 200
MARGIN = 15.0  # how long after the deadline a closing may take on a busy machine
TICK = 0.1  # each trickling client sends one byte per tick
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 1000
RSS_BOUND = 64 << 20  # what the server may keep after the flood (measured: see the docs)


@dataclass(eq=False)
class Flooder:
    """One flooding connection, as the client sees it."""

    sock: socket.socket
    trickles: bool
    opened: float
    closed: float | None = None
    sent: int = 0


@pytest.fixture
def flooded_server(tmp_path: Path) -> Iterator[Server]:
    need = SILENT + TRICKLING + 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"needs {need} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    flags = ["--header-timeout-s", str(DEADLINE), "--max-connections", str(CAP)]
    server = start_server(tmp_path, *flags, "--no-enable-ledger")
    try:
        yield server
    finally:
        stop_server(server)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def ask(client: OpenAI) -> None:
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=4,
        temperature=0,
    )
    assert r.choices[0].message.content is not None


class NormalClient(threading.Thread):
    """Asks one question after another on the SDK's keep-alive connection until stopped."""

    def __init__(self, client: OpenAI) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.answers: list[tuple[float, float]] = []  # when each question went and came back
        self.errors: list[BaseException] = []

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                ask(self.client)
                self.answers.append((began, time.monotonic()))
            except Exception as exc:  # recorded: the test asserts there are none
                self.errors.append(exc)


class Flood:
    """Opens the flooding connections, trickles bytes, and notes when each is closed."""

    def __init__(self, address: tuple[str, int], pid: int) -> None:
        self.address = address
        self.pid = pid
        self.selector = selectors.DefaultSelector()
        self.flooders: list[Flooder] = []
        self.open = 0
        self.peak_rss = 0
        self.next_tick = 0.0

    def open_connections(self, n: int, trickles: bool) -> None:
        for i in range(n):
            sock = socket.create_connection(self.address)
            sock.setblocking(False)
            f = Flooder(sock, trickles, time.monotonic())
            self.flooders.append(f)
            self.selector.register(sock, selectors.EVENT_READ, f)
            self.open += 1
            if i % 50 == 49:
                self.poll(0)  # refusals are seen when they happen, not after all opened

    def run_until_closed(self, limit: float) -> None:
        while self.open and time.monotonic() < limit:
            self.poll(TICK / 2)

    def poll(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            try:
                if key.fileobj.recv(4096) == b"":  # type: ignore[union-attr]
                    self.closed(key.data)
            except OSError:  # reset: the server closed it with bytes unread
                self.closed(key.data)
        now = time.monotonic()
        if now >= self.next_tick:
            self.next_tick = now + TICK
            self.trickle()
            self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))

    def trickle(self) -> None:
        for f in self.flooders:
            if f.trickles and f.closed is None and f.sent < len(HEAD):
                try:
                    f.sent += f.sock.send(HEAD[f.sent : f.sent + 1])
                except OSError:
                    self.closed(f)

    def closed(self, f: Flooder) -> None:
        if f.closed is None:
            f.closed = time.monotonic()
            self.selector.unregister(f.sock)
            f.sock.close()
            self.open -= 1

    def close_all(self) -> None:
        for f in self.flooders:
            self.closed(f)
        self.selector.close()


def test_a_flood_of_silent_and_trickling_connections(flooded_server: Server) -> None:
    server, pid = flooded_server, flooded_server.proc.pid
    normal = NormalClient(server.client())
    for _ in range(5):  # warm-up on the connection it keeps; then the baseline
        ask(normal.client)
    time.sleep(1)
    baseline = rss_bytes(pid)
    normal.start()
    flood = Flood(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])), pid)
    try:
        flood.open_connections(TRICKLING, trickles=True)
        flood.open_connections(SILENT, trickles=False)
        opened = time.monotonic()
        flood.run_until_closed(opened + DEADLINE + MARGIN)
        outlived = flood.open
    finally:
        flood.close_all()
        normal.stop.set()
        normal.join(120)
    assert not normal.errors, normal.errors[:3]
    start, end = flood.flooders[0].opened, max(f.closed or 0.0 for f in flood.flooders)
    during = [a for a in normal.answers if a[0] <= end and a[1] >= start]
    assert during, "the normal client was not served while the flood was on"

    assert outlived == 0, f"{outlived} connections outlived deadline + margin"
    # A refusal at the cap closes at once; the deadline closes DEADLINE after the server
    # accepted, which may come a little before the client noted `opened` (a busy client
    # is descheduled between its connect and its clock read): half the deadline splits them.
    refused = [f for f in flood.flooders if (f.closed or 0.0) - f.opened < DEADLINE / 2]
    held = [f for f in flood.flooders if (f.closed or 0.0) - f.opened >= DEADLINE / 2]
    trickling = [f for f in flood.flooders if f.trickles]
    early = [(round((f.closed or 0.0) - f.opened, 3), f.sent) for f in trickling if f not in held]
    assert not early, f"trickling connections closed early (seconds, bytes): {early[:5]}"
    assert all(f.sent > 1 for f in trickling)  # trickled until the deadline
    assert refused, "no connection was refused at the cap"

    ask(OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-tenant-a", max_retries=0))
    time.sleep(1)
    after = rss_bytes(pid)
    print(
        f"\nflood of {end - start:.1f} s (opening {opened - start:.1f} s): held {len(held)}, "
        f"refused {len(refused)}; normal client: {len(during)} answers during it, "
        f"{len(normal.answers)} in all; server RSS MiB: baseline {baseline >> 20}, "
        f"peak {flood.peak_rss >> 20}, after {after >> 20}"
    )
    assert after - baseline < RSS_BOUND, f"RSS grew {(after - baseline) >> 20} MiB"
