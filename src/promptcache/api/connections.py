"""Bounds on the server's TCP connections, below the HTTP app: a deadline for each request
head and a cap on open connections, as uvicorn HTTP protocol classes.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but a connection
that owes a request head has no deadline: a fresh one has no timer at all, and the first
byte of a head cancels the keep-alive timer. So silent and trickling clients were held
forever. The protocols here add, per server (`ServerConfig`):

    header_timeout_s   a connection must deliver a complete request head (request line
                       and headers) within this many seconds of connecting, or of the end
                       of its previous response; otherwise it is closed
    max_connections    a connection accepted while this many are open is closed at once,
                       before anything is read or written

Both subclass the protocol uvicorn's `--http auto` picks (httptools where installed, else
h11) and hook it only where the head starts to be owed and where it completes. This module
never looks at what a request says: its size, body and run time are the ASGI middleware's
(api/limits.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import h11
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from promptcache.config import ServerConfig

log = logging.getLogger("promptcache")

LOG_EVERY_S = 10.0  # a flood of refused or timed-out connections is one log line per this


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    max_connections: int

    @classmethod
    def of(cls, server: ServerConfig) -> ConnectionLimits:
        return cls(server.header_timeout_s, server.max_connections)


@dataclass(slots=True)
class ThrottledCount:
    """Counts events and logs them as a warning at most once per LOG_EVERY_S."""

    what: str
    total: int = 0
    unlogged: int = 0
    logged_at: float = field(default=float("-inf"))

    def add(self) -> None:
        self.total += 1
        self.unlogged += 1
        now = time.monotonic()
        if now - self.logged_at >= LOG_EVERY_S:
            log.warning("%s: %d (%d since start)", self.what, self.unlogged, self.total)
            self.unlogged, self.logged_at = 0, now


@dataclass(slots=True)
class Bounds:
    """What all connections of one server share: the limits and the counts of closings."""

    limits: ConnectionLimits
    refused: ThrottledCount
    timed_out: ThrottledCount

    @classmethod
    def of(cls, limits: ConnectionLimits) -> Bounds:
        refused = f"refused connections, {limits.max_connections} open (max_connections)"
        late = f"closed connections with no request head in {limits.header_timeout_s:g} s"
        return cls(limits, ThrottledCount(refused), ThrottledCount(late + " (header_timeout_s)"))


class HeadDeadline:
    """One connection's timer, armed while the connection owes a request head."""

    def __init__(self, bounds: Bounds, transport: asyncio.BaseTransport) -> None:
        self.bounds = bounds
        self.transport = transport
        self.timer: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        self.disarm()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.bounds.limits.header_timeout_s, self._expire)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self) -> None:
        self.timer = None
        if not self.transport.is_closing():
            self.bounds.timed_out.add()
            self.transport.close()


def at_capacity(bounds: Bounds, connections: set[Any], transport: asyncio.BaseTransport) -> bool:
    """Close `transport` at once if `connections` (the server's open ones) are at the cap."""
    if len(connections) < bounds.limits.max_connections:
        return False
    bounds.refused.add()
    transport.close()
    return True


class _Bounded:
    """The cap and the deadline around a uvicorn protocol's connection (mixed in before
    it): a connection over the cap is closed before the protocol sees it."""

    bounds: ClassVar[Bounds]
    connections: set[Any]  # the protocol's: the server's open connections
    deadline: HeadDeadline
    refused: bool

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a TCP server's: always a stream
        self.refused = at_capacity(self.bounds, self.connections, stream)
        if self.refused:
            return
        super().connection_made(stream)  # type: ignore[misc]
        self.deadline = HeadDeadline(self.bounds, stream)
        self.deadline.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:  # never counted as open: nothing of uvicorn's to tear down
            return
        self.deadline.disarm()
        super().connection_lost(exc)  # type: ignore[misc]


class BoundedHttpTools(_Bounded, HttpToolsProtocol):
    """uvicorn's httptools protocol with the head deadline and the connection cap."""

    def on_headers_complete(self) -> None:
        self.deadline.disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # a pipelined request already parsed is running now: its head is not owed
        if not self.transport.is_closing() and self.cycle.response_complete:
            self.deadline.arm()


class BoundedH11(_Bounded, H11Protocol):
    """uvicorn's h11 protocol with the head deadline and the connection cap."""

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # h11 has read a whole head
            self.deadline.disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.deadline.arm()


IMPLEMENTATIONS: dict[str, type[BoundedHttpTools] | type[BoundedH11]] = {
    "httptools": BoundedHttpTools,
    "h11": BoundedH11,
}


def bounded_protocol(limits: ConnectionLimits, http: str = "auto") -> type[asyncio.Protocol]:
    """A protocol class for uvicorn's `http`, bounded by `limits`: "auto" is the one
    uvicorn's own "auto" picks. One class per server, since its connections share the cap."""
    if http == "auto":
        http = "httptools" if issubclass(AutoHTTPProtocol, HttpToolsProtocol) else "h11"
    base = IMPLEMENTATIONS[http]
    return cast(type[asyncio.Protocol], type(base.__name__, (base,), {"bounds": Bounds.of(limits)}))
