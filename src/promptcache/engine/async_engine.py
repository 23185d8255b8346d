"""Run the `LLMEngine` in its own thread and stream its outputs to asyncio callers: the
in-process `EngineClient`.

The event loop never runs model work: it puts commands (add, abort, peek) in a thread-safe
inbox and awaits per-request queues that the engine thread fills between steps. A caller
that stops listening (client disconnect, cancelled task) aborts its request, which frees
its blocks. The engine thread publishes a snapshot of the engine's statistics after each
step; other threads read that snapshot, never the live pool.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from typing import Any

from promptcache.engine.client import Disconnected, Health, final_output
from promptcache.engine.errors import EngineDead, EngineOverloaded, RequestError
from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.outputs import PrefixReuse, RequestOutput
from promptcache.engine.request import GenerationRequest, PreparedRequest

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Add:
    prepared: PreparedRequest
    sink: _Sink


@dataclass(slots=True)
class _Abort:
    request_id: str


@dataclass(slots=True)
class _Peek:
    """Ask the engine thread what a request would reuse now (it reads the live pool)."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    answer: asyncio.Future[PrefixReuse]

    def reply(self, engine: LLMEngine) -> None:
        try:
            result = engine.peek(self.request)
        except Exception as exc:  # answer the caller; the engine thread goes on
            self.loop.call_soon_threadsafe(_settle, self.answer, exc)
            return
        self.loop.call_soon_threadsafe(_settle, self.answer, result)

    def fail(self, exc: BaseException) -> None:
        self.loop.call_soon_threadsafe(_settle, self.answer, exc)


def _settle(answer: asyncio.Future[PrefixReuse], result: PrefixReuse | BaseException) -> None:
    if answer.done():  # the caller gave up waiting
        return
    if isinstance(result, BaseException):
        answer.set_exception(result)
    else:
        answer.set_result(result)


Command = _Add | _Abort | _Peek


@dataclass(slots=True)
class _Sink:
    """Where the engine thread delivers a request's outputs (on the caller's loop)."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput | BaseException]

    def put(self, item: RequestOutput | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class RequestHandle:
    """One submitted request: iterate `outputs()` once; leaving early aborts it."""

    def __init__(self, owner: AsyncEngine, request_id: str, sink: _Sink) -> None:
        self.owner, self._request_id, self._sink = owner, request_id, sink

    @property
    def request_id(self) -> str:
        return self._request_id

    async def outputs(self) -> AsyncGenerator[RequestOutput, None]:
        """Yield outputs as tokens arrive; the last one has `finished`."""
        finished = False
        try:
            while not finished:
                item = await self._sink.queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            self.owner._forget(self._request_id, finished)

    async def final(self, disconnected: Disconnected | None = None) -> RequestOutput:
        """Wait for the finished output; abort early if `disconnected()` turns true."""
        return await final_output(self.outputs(), disconnected)


class AsyncEngine:
    """Thread-backed, asyncio-facing front of one `LLMEngine` (an `EngineClient`)."""

    def __init__(self, engine: LLMEngine, max_queue: int) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._inbox: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self._sinks: dict[str, _Sink] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="promptcache-engine", daemon=True)
        self._stopped = False
        self._snapshot = engine.stats()  # replaced (never mutated) by the engine thread
        self.error: BaseException | None = None
        self.num_aborted = 0  # requests whose caller stopped listening before the end

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop after the current step (pending requests end with an error), then let the
        engine finish its queued disk writes."""
        self._stopped = True
        self._inbox.put(None)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.engine.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    @property
    def num_requests(self) -> int:
        """Requests accepted and not yet finished (queued or running)."""
        with self._lock:
            return len(self._sinks)

    def health(self) -> Health:
        detail = None if self.alive else f"the engine stopped: {self.error or 'not running'}"
        return Health(self.alive, self.num_requests, detail)

    # -- requests -------------------------------------------------------------------------

    def warm_grammar(self, output: OutputSpec) -> None:
        """Compile `output`'s grammar into the engine's cache (any thread but the engine's);
        raises `RequestError` for a schema that cannot be compiled."""
        self.engine.grammars.get(output)

    def submit(self, request: GenerationRequest) -> RequestHandle:
        """Check and queue a request now (raises before any output, see `EngineClient`)."""
        if not self.alive:
            raise EngineDead("the engine is not running")
        request = replace(request, request_id=request.request_id or uuid.uuid4().hex)
        prepared = self.engine.prepare(request)  # the only check; the engine thread trusts it
        request_id = prepared.request_id
        sink = _Sink(asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            if len(self._sinks) >= self.max_queue:
                raise EngineOverloaded(f"the server is busy: {len(self._sinks)} requests in flight")
            if request_id in self._sinks:
                raise RequestError(f"request id {request_id!r} is already running")
            self._sinks[request_id] = sink
        self._inbox.put(_Add(prepared, sink))
        return RequestHandle(self, request_id, sink)

    async def peek(self, request: GenerationRequest) -> PrefixReuse:
        """What `request` would reuse from the cache now, asked of the engine thread between
        steps (never racing the scheduler); the cache is left as it was."""
        if not self.alive:
            raise EngineDead("the engine is not running")
        loop = asyncio.get_running_loop()
        cmd = _Peek(request, loop, loop.create_future())
        self._inbox.put(cmd)
        return await cmd.answer

    def abort(self, request_id: str) -> None:
        """Abort a request by id (its stream then ends without a final output)."""
        self._inbox.put(_Abort(request_id))

    def _forget(self, request_id: str, finished: bool) -> None:
        if not finished:
            self.num_aborted += 1
            self._inbox.put(_Abort(request_id))
        with self._lock:
            self._sinks.pop(request_id, None)

    # -- engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        self.engine.adopt_thread()
        try:
            while not self._stopped:
                block = not self.engine.has_unfinished()
                if not self._drain(block):
                    break
                if self.engine.has_unfinished():
                    self._deliver(self.engine.step())
                self._snapshot = self.engine.stats()
        except BaseException as exc:  # a bug: fail every waiting request, keep the cause
            log.exception("engine thread failed")
            self.error = exc
        dead = EngineDead(f"the engine stopped: {self.error or 'shutdown'}")
        self._fail_all(dead)
        self._fail_peeks(dead)

    def _drain(self, block: bool) -> bool:
        """Apply queued commands; wait for one when idle. False when asked to stop."""
        while True:
            try:
                cmd = self._inbox.get(block=block)
            except queue.Empty:
                return True
            if cmd is None:
                return False
            self._apply(cmd)
            block = False

    def _apply(self, cmd: Command) -> None:
        if isinstance(cmd, _Peek):
            cmd.reply(self.engine)
            return
        if isinstance(cmd, _Abort):
            self.engine.abort(cmd.request_id)
            return
        try:
            self.engine.add(cmd.prepared)
        except RequestError as exc:
            cmd.sink.put(exc)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            with self._lock:
                sink = self._sinks.get(out.request_id)
            if sink is not None:
                sink.put(out)

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            sinks = list(self._sinks.values())
        for sink in sinks:
            sink.put(exc)

    def _fail_peeks(self, exc: BaseException) -> None:
        """Answer the peeks still queued (their callers would otherwise wait forever)."""
        while True:
            try:
                cmd = self._inbox.get(block=False)
            except queue.Empty:
                return
            if isinstance(cmd, _Peek):
                cmd.fail(exc)

    def stats(self) -> dict[str, Any]:
        """The engine thread's latest snapshot, plus the front's own counts."""
        return {
            **self._snapshot,
            "requests_in_flight": self.num_requests,
            "requests_aborted": self.num_aborted,
        }
