"""The worker endpoints a router uses (off unless `internal_api_key` is set).

    GET  /v1/promptcache/worker    what this worker serves: model, KV identity, context
    POST /v1/promptcache/generate  a `GenerationRequest` as JSON (already rendered,
                                   tokenized and checked by the router, tenant included);
                                   streams one `RequestOutput` per line (NDJSON)
    POST /v1/promptcache/peek      a `GenerationRequest` as JSON: what it would reuse from
                                   this worker's cache now (`reused_tokens`,
                                   `cached_tokens`), changing nothing

All require `Authorization: Bearer <internal_api_key>`: the caller names the tenant, so
only the router may call them. Refusals before the first output use OpenAI's error shape
(400 bad request, 429 queue full, 500 engine down); a client that disconnects aborts the
request and frees its blocks.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import StreamingResponse

from promptcache.api.context import ServerContext
from promptcache.api.errors import APIError, invalid
from promptcache.engine.wire import output_to_json, request_from_json

Authorization = Annotated[str | None, Header()]


def add_worker_routes(
    app: FastAPI, ctx: ServerContext, key: str | None, info: dict[str, Any]
) -> None:
    def check(authorization: str | None) -> None:
        if key is None:
            raise APIError(404, "Not Found", "invalid_request_error", None, "not_found")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise APIError(
                401, "Incorrect internal API key.", "invalid_request_error", None, "invalid_api_key"
            )

    @app.get("/v1/promptcache/worker", include_in_schema=False)
    async def worker(authorization: Authorization = None) -> dict[str, Any]:
        check(authorization)
        return info

    @app.post("/v1/promptcache/generate", include_in_schema=False)
    async def generate(request: Request, authorization: Authorization = None) -> StreamingResponse:
        check(authorization)
        try:
            gen = request_from_json(await request.json())
        except ValueError as exc:
            raise invalid(str(exc), None) from exc
        await ctx.prepare(gen, "format")  # the router names the field its API calls it
        stream = ctx.submit(gen, "prompt")

        async def lines() -> AsyncIterator[str]:
            async for out in stream.outputs():
                yield json.dumps(output_to_json(out)) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.post("/v1/promptcache/peek", include_in_schema=False)
    async def peek(request: Request, authorization: Authorization = None) -> dict[str, Any]:
        check(authorization)
        try:
            gen = request_from_json(await request.json())
        except ValueError as exc:
            raise invalid(str(exc), None) from exc
        reuse = await ctx.engine.peek(gen)
        if reuse is None:
            raise APIError(501, "this engine cannot peek at its cache", "server_error")
        return {"reused_tokens": reuse.reused_tokens, "cached_tokens": reuse.cached_tokens}
