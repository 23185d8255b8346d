"""`EngineClient`: what the HTTP handlers need from an engine, wherever it runs.

The in-process engine thread (`promptcache.engine.async_engine.AsyncEngine`) is one
implementation; a remote worker behind the router, or a Ray Serve replica, is another.
Handlers depend on this protocol only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.outputs import PrefixReuse, RequestOutput
from promptcache.engine.request import GenerationRequest

Disconnected = Callable[[], Awaitable[bool]]  # e.g. starlette's Request.is_disconnected
DISCONNECT_POLL_S = 0.5  # how often a non-streamed request checks that its client is there


@dataclass(frozen=True, slots=True)
class Health:
    alive: bool
    requests_in_flight: int
    detail: str | None = None  # why it is not alive


class RequestStream(Protocol):
    """One submitted request. Iterate `outputs()` once (or await `final()`); leaving the
    iteration before the final output aborts the request and frees its blocks."""

    @property
    def request_id(self) -> str: ...

    def outputs(self) -> AsyncGenerator[RequestOutput, None]: ...

    async def final(self, disconnected: Disconnected | None = None) -> RequestOutput: ...


class EngineClient(Protocol):
    """Submit, abort, peek at the cache, stream outputs, statistics and health of one
    engine."""

    def start(self) -> None: ...

    def shutdown(self) -> None: ...

    def submit(self, request: GenerationRequest) -> RequestStream:
        """Check and queue a request. Raises `RequestError` (the request can't run),
        `EngineOverloaded` (queue full) or `EngineDead` before any output."""
        ...

    def abort(self, request_id: str) -> None: ...

    async def peek(self, request: GenerationRequest) -> PrefixReuse | None:
        """What `request` would reuse from the prefix cache if it were submitted now,
        changing nothing (no block held, no retention refreshed, no query counted); None
        where this engine cannot tell (e.g. a worker that is not promptcache's)."""
        ...

    def warm_grammar(self, output: OutputSpec) -> None:
        """Compile `output`'s grammar where the engine will look for it (called in a thread
        of the caller's, never the engine's); raises `RequestError` for a schema that cannot
        be compiled. Engines whose workers compile it themselves do nothing."""
        ...

    def stats(self) -> dict[str, Any]:
        """A recent snapshot of the engine's figures (safe to call from any thread)."""
        ...

    def health(self) -> Health: ...


async def final_output(
    outputs: AsyncGenerator[RequestOutput, None], disconnected: Disconnected | None
) -> RequestOutput:
    """The last of `outputs`; closes them (aborting the request) if `disconnected()` turns
    true first."""

    async def last() -> RequestOutput:
        last_out = None
        async for out in outputs:
            last_out = out
        assert last_out is not None
        return last_out

    task = asyncio.ensure_future(last())
    while disconnected is not None and not task.done():
        await asyncio.wait([task], timeout=DISCONNECT_POLL_S)
        if not task.done() and await disconnected():
            task.cancel()  # closes `outputs`, which aborts the request
    return await task


async def discard(streams: Iterable[RequestStream]) -> None:
    """Abort submitted requests whose outputs nobody will read: each stream is started and
    closed, which aborts its request and frees its place in the queue."""
    for stream in streams:
        gen = stream.outputs()
        first = asyncio.ensure_future(anext(gen))
        await asyncio.sleep(0)  # the generator runs up to its first wait
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await gen.aclose()
