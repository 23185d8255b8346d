"""Send a workload's sessions to an OpenAI-compatible endpoint and record every request.

Closed loop (`concurrency` N): N simulated users, each starts its next session when the
last one ends. Open loop (`rate` R): sessions start at Poisson arrivals, R per second on
average, however many are still running. Every request is a streamed Chat Completion with
`stream_options.include_usage`, so the time to the first content chunk is real and the
usage (`prompt_tokens_details.cached_tokens`) comes from the server itself. Errors are
recorded by kind; nothing a server does crashes the run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from promptcache.bench.records import RequestRecord
from promptcache.bench.workloads import Session

try:  # newer openai SDKs talk through httpx2; its errors escape a stream cut mid-way
    import httpx2

    _TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx2.HTTPError)
except ImportError:  # pragma: no cover - older SDKs use httpx itself
    _TRANSPORT_ERRORS = (httpx.HTTPError,)
_CUT_OR_GARBLED: tuple[type[Exception], ...] = (*_TRANSPORT_ERRORS, ValueError)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to send: loop kind, bounds and request fields."""

    model: str
    concurrency: int = 1
    rate: float | None = None  # sessions/s, Poisson arrivals; None = closed loop
    max_requests: int | None = None  # stop starting requests after this many
    duration: float | None = None  # stop starting requests after this many seconds
    temperature: float = 0.0
    max_tokens_param: str = "max_tokens"  # or max_completion_tokens (newer OpenAI models)
    seed: int = 0  # arrival times
    retention: str | None = None  # prompt_cache_retention to send: "in_memory" | "24h"


class Runner:
    """Runs sessions through one `openai.AsyncOpenAI` client; `run()` returns the records."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        options: RunOptions,
        on_done: Callable[[RequestRecord], None] | None = None,
        count_prompt: Callable[[list[dict[str, str]]], int] | None = None,
    ) -> None:
        self.client = client
        self.opts = options
        self.on_done = on_done or (lambda r: None)
        self.count_prompt = count_prompt  # estimates prompt tokens when a server sends no usage
        self.records: list[RequestRecord] = []
        self._t0 = 0.0
        self._sent = 0
        self.wall = 0.0

    async def run(self, sessions: list[Session]) -> list[RequestRecord]:
        self._t0 = time.perf_counter()
        if self.opts.rate is None:
            await self._closed_loop(sessions)
        else:
            await self._open_loop(sessions, self.opts.rate)
        self.wall = self._now()
        return sorted(self.records, key=lambda r: r.start)

    async def _closed_loop(self, sessions: list[Session]) -> None:
        queue = iter(sessions)

        async def user() -> None:
            for s in queue:  # a shared iterator: each session goes to one user
                if not self._may_start():
                    return
                await self._session(s)

        await asyncio.gather(*(user() for _ in range(max(1, self.opts.concurrency))))

    async def _open_loop(self, sessions: list[Session], rate: float) -> None:
        rng = random.Random(self.opts.seed)
        tasks = []
        next_at = 0.0
        for s in sessions:
            await asyncio.sleep(max(0.0, next_at - self._now()))
            if not self._may_start():
                break
            tasks.append(asyncio.create_task(self._session(s)))
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _may_start(self) -> bool:
        o = self.opts
        if o.max_requests is not None and self._sent >= o.max_requests:
            return False
        return o.duration is None or self._now() < o.duration

    async def _session(self, s: Session) -> None:
        answers: list[str] = []
        for r in range(len(s.questions)):
            if r and not self._may_start():
                return
            self._sent += 1
            rec = await self._request(s, r, s.messages(r, answers))
            self.records.append(rec)
            self.on_done(rec)
            if not rec.ok:
                return  # a broken history cannot go on
            answers.append(rec.text)

    async def _request(
        self, s: Session, round_: int, messages: list[dict[str, str]]
    ) -> RequestRecord:
        rec = RequestRecord(s.id, round_, s.tag, start=self._now())
        try:
            await self._stream(rec, messages, s.max_tokens)
            if rec.finish_reason is None:
                _fail(rec, "dropped", "the stream ended before a finish_reason")
        except openai.APIStatusError as exc:
            _fail(rec, f"http_{exc.status_code}", _message(exc))
        except openai.APITimeoutError as exc:
            _fail(rec, "timeout", str(exc))
        except openai.APIConnectionError as exc:  # before the response, or cut inside it
            kind = "dropped" if rec.streaming else "connection"
            _fail(rec, kind, f"{exc}: {exc.__cause__ or ''}".strip(": "))
        except openai.APIError as exc:  # an error event inside the stream
            _fail(rec, "stream_error", _message(exc))
        except _CUT_OR_GARBLED as exc:  # cut mid-stream, or not SSE/JSON
            _fail(rec, "dropped", f"{type(exc).__name__}: {exc}")
        rec.end = self._now()
        if not rec.usage_reported:  # estimates: one chunk per token, our chat template
            rec.completion_tokens = len(rec.chunk_times)
            rec.prompt_tokens = self.count_prompt(messages) if self.count_prompt else 0
        return rec

    def _retention(self) -> dict[str, Any]:
        if self.opts.retention is None:
            return {}
        return {"extra_body": {"prompt_cache_retention": self.opts.retention}}

    async def _stream(self, rec: RequestRecord, messages: list[Any], max_tokens: int) -> None:
        create: Any = self.client.chat.completions.create  # max-tokens field set by name
        stream = await create(
            model=self.opts.model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            temperature=self.opts.temperature,
            **{self.opts.max_tokens_param: max_tokens},
            **self._retention(),
        )
        rec.streaming = True
        parts: list[str] = []
        async for chunk in stream:
            if chunk.choices:
                choice = chunk.choices[0]
                if choice.delta and choice.delta.content:
                    rec.chunk_times.append(self._now())
                    parts.append(choice.delta.content)
                rec.finish_reason = choice.finish_reason or rec.finish_reason
            if chunk.usage is not None:
                _take_usage(rec, chunk.usage)
        rec.text = "".join(parts)


def _take_usage(rec: RequestRecord, usage: Any) -> None:
    details = getattr(usage, "prompt_tokens_details", None)
    rec.prompt_tokens = int(usage.prompt_tokens or 0)
    rec.cached_tokens = int(getattr(details, "cached_tokens", 0) or 0)
    rec.completion_tokens = int(usage.completion_tokens or 0)
    rec.usage_reported = True


def _fail(rec: RequestRecord, kind: str, detail: str) -> None:
    rec.error, rec.error_detail = kind, detail[:500]


def _message(exc: openai.APIError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body, dict) else {}
    msg = inner.get("message") if isinstance(inner, dict) else None
    return str(msg or exc.message)
