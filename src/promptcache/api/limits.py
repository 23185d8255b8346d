"""Limits on what a client may send, each a server setting (`ServerConfig`), and the ASGI
middleware that holds the transport-level ones before any handler runs.

    max_header_bytes     request headers, names and values together      -> 431
    max_request_bytes    the body, by Content-Length or as it streams in  -> 413
    body_timeout_s       time to receive the whole body (slow senders)    -> 408
    request_timeout_s    a request's whole run, queue included            -> 504 (aborted;
                         in-band error event on a stream)
    max_messages         messages in one request, after history           -> 400 (handlers)
    max_stop_sequences   Anthropic's stop_sequences (OpenAI's stop: 4)    -> 400 (handlers)
    max_tools            tools in one request                             -> 400 (prepare)
    max_schema_bytes     one JSON schema's canonical JSON                 -> 400 (prepare)
    max_schema_depth     one JSON schema's nesting of objects and arrays  -> 400 (prepare)
    retry_after_s        what a 429 for a full queue (max_queue) tells the client to wait

Errors take the shape of the API the path belongs to (`api.errors`). The schema limits are
checked by `ServerContext.prepare` before any compile (`api.schema_limits`); the compile's
time budget is the engine's (`grammar_compile_timeout_s`, engine/grammar/budget.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from promptcache.api.errors import APIError, error_response, invalid
from promptcache.api.schema_limits import SchemaLimits
from promptcache.config import ServerConfig

Scope = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_bytes: int
    max_header_bytes: int
    max_messages: int
    max_stop_sequences: int
    body_timeout_s: float
    request_timeout_s: float
    retry_after_s: float = 1.0
    schemas: SchemaLimits = field(default_factory=SchemaLimits)

    @classmethod
    def of(cls, server: ServerConfig) -> Limits:
        return cls(
            server.max_request_bytes,
            server.max_header_bytes,
            server.max_messages,
            server.max_stop_sequences,
            server.body_timeout_s,
            server.request_timeout_s,
            server.retry_after_s,
            SchemaLimits(server.max_schema_bytes, server.max_schema_depth, server.max_tools),
        )

    def check_messages(self, n: int, param: str) -> None:
        if n > self.max_messages:
            raise invalid(
                f"{param}: {n} messages, more than this server's limit of "
                f"{self.max_messages} (max_messages)",
                param,
                "too_many_messages",
            )


class _TooLarge(Exception):
    pass


class LimitsMiddleware:
    """Refuses oversized headers and bodies and bodies that arrive too slowly, before the
    app reads them; the app only ever sees a body within the limits."""

    def __init__(self, app: Any, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        err = self._check_head(scope)
        if err is not None:
            await self._refuse(scope, receive, send, err)
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.limits.body_timeout_s)
        except _TooLarge:
            await self._refuse(scope, receive, send, self._too_large())
            return
        except TimeoutError:
            err = APIError(
                408,
                f"the request body did not arrive within {self.limits.body_timeout_s:g} s "
                "(body_timeout_s)",
                "invalid_request_error",
                None,
                "request_timeout",
            )
            await self._refuse(scope, receive, send, err)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_head(self, scope: Scope) -> APIError | None:
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        size = sum(len(k) + len(v) for k, v in headers)
        if size > self.limits.max_header_bytes:
            return APIError(
                431,
                f"request headers of {size} bytes exceed this server's limit of "
                f"{self.limits.max_header_bytes} (max_header_bytes)",
                "invalid_request_error",
                None,
                "headers_too_large",
            )
        for k, v in headers:
            if k == b"content-length" and v.isdigit() and int(v) > self.limits.max_request_bytes:
                return self._too_large()
        return None

    def _too_large(self) -> APIError:
        return APIError(
            413,
            f"the request body exceeds this server's limit of {self.limits.max_request_bytes} "
            "bytes (max_request_bytes)",
            "invalid_request_error",
            None,
            "request_too_large",
        )

    async def _read(self, receive: Any) -> list[Message]:
        """Every body message, counted against the size limit."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            size += len(message.get("body", b""))
            if size > self.limits.max_request_bytes:
                raise _TooLarge
            if not message.get("more_body", False):
                return messages

    async def _refuse(self, scope: Scope, receive: Any, send: Any, err: APIError) -> None:
        response = error_response(err, Request(scope))
        response.headers["connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _replay(messages: list[Message], receive: Any) -> Any:
    """A `receive` that hands back the buffered body, then defers to the real one (which
    reports the client's disconnect)."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
