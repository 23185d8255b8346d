"""The end-of-request hook: one record for every request however it ends.

`TrackedClient` wraps any `EngineClient` and fires `RequestHooks` exactly once per request:
finished (a finish reason), aborted (the caller stopped listening), failed (an error after
it was accepted, e.g. the engine died mid-stream) or rejected (refused at submission:
invalid for the engine, queue full, engine down). Metrics and the usage ledger subscribe.
A hook that raises is logged and never disturbs the request or other hooks.

A hook may return an awaitable (the ledger returns its row's commit). For a finished
request the hooks fire *before* its final output is handed on, and the stream awaits those
awaitables first: the caller sees the end of a request only once its row is durable.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from promptcache.engine.client import (
    Disconnected,
    EngineClient,
    Health,
    RequestStream,
    final_output,
)
from promptcache.engine.errors import EngineDead, EngineOverloaded, RequestError, RequestTimedOut
from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.outputs import CacheReport, PrefixReuse, RequestOutput, Usage
from promptcache.engine.request import GenerationRequest

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    FINISHED = "finished"
    ABORTED = "aborted"
    FAILED = "failed"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """How one request ended, with its usage and timings (as the client side saw them)."""

    request_id: str | None  # None when rejected before an id was given
    outcome: Outcome
    request: GenerationRequest
    finish_reason: str | None  # "stop" | "length" when finished
    usage: Usage | None  # the last usage reported (partial when aborted or failed)
    cache: CacheReport | None  # the cache's report, on finished requests
    ttft_s: float | None  # submission -> first output token
    latency_s: float  # submission -> end
    error: str | None  # why it failed or was rejected
    worker: str | None = None  # the worker that ran it (behind the router)
    queue_s: float | None = None  # the engine's arrival -> admission; None if never admitted

    @property
    def endpoint(self) -> str:
        return self.request.endpoint


RequestHook = Callable[[RequestRecord], Awaitable[None] | None]


class RequestHooks:
    """Subscribers to the end of every request."""

    def __init__(self) -> None:
        self._hooks: list[RequestHook] = []

    def subscribe(self, hook: RequestHook) -> None:
        self._hooks.append(hook)

    def fire(self, record: RequestRecord) -> list[Awaitable[None]]:
        """Call every hook; returns the awaitables some of them handed back."""
        pending = []
        for hook in self._hooks:
            try:
                result = hook(record)
            except Exception:
                log.exception("end-of-request hook %r failed", hook)
                continue
            if result is not None:
                pending.append(result)
        return pending

    @staticmethod
    async def settle(pending: list[Awaitable[None]]) -> None:
        """Await the hooks' awaitables; a failure is logged, never raised."""
        for result in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(result, BaseException):
                log.error("end-of-request hook failed: %r", result)


class TrackedStream:
    """A request's stream that reports its end to the hooks once."""

    def __init__(
        self,
        inner: RequestStream,
        request: GenerationRequest,
        hooks: RequestHooks,
        timeout_s: float | None = None,
    ) -> None:
        self._inner, self._request, self._hooks = inner, request, hooks
        self._timeout = timeout_s
        self._start = time.perf_counter()
        self._first: float | None = None
        self._last: RequestOutput | None = None
        self._fired = False

    @property
    def request_id(self) -> str:
        return self._inner.request_id

    async def outputs(self) -> AsyncGenerator[RequestOutput, None]:
        outcome, error = Outcome.ABORTED, None
        deadline = None  # in event-loop time
        if self._timeout is not None:
            spent = time.perf_counter() - self._start
            deadline = asyncio.get_running_loop().time() + self._timeout - spent
        try:
            async with aclosing(self._inner.outputs()) as inner:
                while True:
                    out = await self._next(inner, deadline)
                    if out is None:
                        break
                    self._seen(out)
                    if out.finished:
                        outcome = Outcome.FINISHED
                        await self._hooks.settle(self._fire(outcome, None))
                    yield out
        except Exception as exc:
            outcome, error = Outcome.FAILED, str(exc) or type(exc).__name__
            raise
        finally:
            self._fire(outcome, error)

    async def final(self, disconnected: Disconnected | None = None) -> RequestOutput:
        return await final_output(self.outputs(), disconnected)

    async def _next(
        self, inner: AsyncGenerator[RequestOutput, None], deadline: float | None
    ) -> RequestOutput | None:
        """The next output, None at the end; `RequestTimedOut` past the deadline (event-loop
        time; leaving then closes the engine's stream, which aborts the request). No task
        per output: the timeout is a timer handle on this one."""
        try:
            async with asyncio.timeout_at(deadline):  # None: no deadline
                return await anext(inner, None)
        except TimeoutError:
            raise RequestTimedOut(
                f"the request ran longer than this server's {self._timeout:g} s limit "
                "(request_timeout_s) and was stopped"
            ) from None

    def _seen(self, out: RequestOutput) -> None:
        if self._first is None and out.new_token_ids:
            self._first = time.perf_counter()
        self._last = out

    def _fire(self, outcome: Outcome, error: str | None) -> list[Awaitable[None]]:
        if self._fired:
            return []
        self._fired = True
        last = self._last
        finished = outcome is Outcome.FINISHED and last is not None
        record = RequestRecord(
            request_id=self.request_id,
            outcome=outcome,
            request=self._request,
            finish_reason=last.finish_reason if finished and last else None,
            usage=last.usage if last is not None else None,
            cache=last.cache if last is not None else None,
            ttft_s=None if self._first is None else self._first - self._start,
            latency_s=time.perf_counter() - self._start,
            error=error,
            worker=last.worker if last is not None else None,
            queue_s=last.queue_s if last is not None else None,
        )
        return self._hooks.fire(record)


class TrackedClient:
    """An `EngineClient` that fires the end-of-request hooks for the client it wraps."""

    def __init__(
        self, inner: EngineClient, hooks: RequestHooks, timeout_s: float | None = None
    ) -> None:
        """`timeout_s`: most seconds a request may run, queue included (None: no limit)."""
        self.inner = inner
        self.hooks = hooks
        self.timeout_s = timeout_s

    def start(self) -> None:
        self.inner.start()

    def shutdown(self) -> None:
        self.inner.shutdown()

    def submit(self, request: GenerationRequest) -> TrackedStream:
        start = time.perf_counter()
        try:
            stream = self.inner.submit(request)
        except (RequestError, EngineOverloaded, EngineDead) as exc:
            self.hooks.fire(_rejected(request, exc, time.perf_counter() - start))
            raise
        return TrackedStream(stream, request, self.hooks, self.timeout_s)

    def abort(self, request_id: str) -> None:
        self.inner.abort(request_id)

    async def peek(self, request: GenerationRequest) -> PrefixReuse | None:
        """Not a request: no hook fires."""
        return await self.inner.peek(request)

    def warm_grammar(self, output: OutputSpec) -> None:
        self.inner.warm_grammar(output)

    def stats(self) -> dict[str, Any]:
        return self.inner.stats()

    def health(self) -> Health:
        return self.inner.health()


def _rejected(request: GenerationRequest, exc: Exception, latency: float) -> RequestRecord:
    return RequestRecord(
        request_id=request.request_id,
        outcome=Outcome.REJECTED,
        request=request,
        finish_reason=None,
        usage=None,
        cache=None,
        ttft_s=None,
        latency_s=latency,
        error=str(exc),
    )
