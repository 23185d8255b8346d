"""The FastAPI application: routes, auth, error handlers, and the engine's lifecycle."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptcache.api import errors, openapi
from promptcache.api.anthropic.count_tokens import count_tokens
from promptcache.api.anthropic.messages import create_message
from promptcache.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from promptcache.api.auth import KeyRing
from promptcache.api.chat import create_chat_completion
from promptcache.api.completions import create_completion
from promptcache.api.context import Rendering, ServerContext
from promptcache.api.dashboard import dashboard_response
from promptcache.api.input_tokens import count_input_tokens
from promptcache.api.internal import add_worker_routes
from promptcache.api.limits import Limits, LimitsMiddleware
from promptcache.api.metrics import Metrics
from promptcache.api.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    InputTokensRequest,
    ResponsesRequest,
)
from promptcache.api.responses import create_response, get_response
from promptcache.api.store import ResponseStore
from promptcache.api.usage import request_cache, usage_report
from promptcache.config import ServerConfig
from promptcache.engine.async_engine import AsyncEngine
from promptcache.engine.client import EngineClient
from promptcache.engine.errors import RequestError, RequestTimedOut
from promptcache.engine.lifecycle import RequestHooks, TrackedClient
from promptcache.engine.llm_engine import LLMEngine
from promptcache.ledger.books import Books

log = logging.getLogger(__name__)

Authorization = Annotated[str | None, Header()]
ApiKey = Annotated[str | None, Header()]  # Anthropic's x-api-key


def create_app(
    engine: LLMEngine,
    model_name: str,
    keys: KeyRing,
    store: ResponseStore,
    max_queue: int,
    hooks: RequestHooks | None = None,
    books: Books | None = None,
    internal_api_key: str | None = None,
    limits: Limits | None = None,
    rendering: Rendering | None = None,
) -> FastAPI:
    """Build the app; the engine thread starts and stops with the app's lifespan.

    Every request's end is reported to `hooks` (metrics and the ledger in `books`
    subscribe here; pass your own `RequestHooks` to subscribe more). With
    `internal_api_key`, the worker endpoints a router calls are on (api/internal.py).
    """
    client = AsyncEngine(engine, max_queue)
    rendering = rendering or Rendering.of(ServerConfig(), engine.config)
    app = build_app(
        client, engine.tokenizer, model_name, keys, store, hooks, books, limits, rendering
    )
    info = {
        "model": model_name,
        "kv_identity": engine.kv_identity,
        "max_model_len": engine.max_model_len,
        "vocab_size": engine.model.spec.vocab_size,
    }
    add_worker_routes(app, app.state.ctx, internal_api_key, info)
    return app


def build_app(
    engine: EngineClient,
    tokenizer: Any,
    model_name: str,
    keys: KeyRing,
    store: ResponseStore,
    hooks: RequestHooks | None = None,
    books: Books | None = None,
    limits: Limits | None = None,
    rendering: Rendering | None = None,
) -> FastAPI:
    """The OpenAI API over any `EngineClient`: the in-process engine, or the router's
    `RemoteEngine` (which then also registers its metrics). `limits` default to
    `ServerConfig`'s defaults."""
    limits = limits or Limits.of(ServerConfig())
    hooks = hooks or RequestHooks()
    client = TrackedClient(engine, hooks, limits.request_timeout_s)
    metrics = Metrics(client.stats)
    register = getattr(engine, "register_metrics", None)
    if register is not None:
        register(metrics.registry)
    hooks.subscribe(metrics.on_request_end)
    if books is not None:
        hooks.subscribe(books.on_request_end)
    ctx = ServerContext(
        client,
        tokenizer,
        model_name,
        store,
        metrics,
        created=int(time.time()),
        limits=limits,
        rendering=rendering or Rendering(),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        client.start()
        try:
            yield
        finally:
            ctx.renderer.shutdown(wait=False)
            ctx.grammar_threads.shutdown(wait=False)
            client.shutdown()
            store.close()
            if books is not None:
                books.ledger.close()

    app = FastAPI(title="promptcache", lifespan=lifespan)
    app.state.ctx = ctx
    app.add_middleware(LimitsMiddleware, limits=limits)
    openapi.install(app)
    app.add_exception_handler(errors.APIError, errors.api_error_handler)
    app.add_exception_handler(RequestTimedOut, errors.timeout_handler)
    app.add_exception_handler(RequestError, errors.request_error_handler)
    app.add_exception_handler(RequestValidationError, errors.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, errors.http_error_handler)
    app.add_exception_handler(Exception, errors.unhandled_error_handler)
    _routes(app, ctx, keys)
    _usage_route(app, keys, books.ledger.path if books else None)
    return app


def _usage_route(app: FastAPI, keys: KeyRing, ledger: Path | None) -> None:
    @app.get("/v1/promptcache/usage")
    async def usage(
        authorization: Authorization = None,
        since: str | None = None,
        until: str | None = None,
        model: str | None = None,
        by: str = "day",
        tenant: str | None = None,
    ) -> dict[str, Any]:
        caller = keys.caller(authorization)
        return usage_report(ledger, caller, since, until, model, by, tenant)

    @app.get("/dashboard", response_model=None, include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        ctx: ServerContext = request.app.state.ctx
        return dashboard_response(request, keys, ledger, ctx.engine.stats(), ctx.model_name)

    @app.get("/v1/promptcache/requests/{request_id}/cache")
    async def request_cache_route(
        request_id: str, authorization: Authorization = None
    ) -> dict[str, Any]:
        return request_cache(ledger, keys.caller(authorization), request_id)


def _routes(app: FastAPI, ctx: ServerContext, keys: KeyRing) -> None:
    @app.post("/v1/chat/completions", response_model=None)
    async def chat(
        req: ChatCompletionRequest, request: Request, authorization: Authorization = None
    ) -> Any:
        caller = keys.caller(authorization)
        return await create_chat_completion(req, ctx, caller, request.is_disconnected)

    @app.post("/v1/completions", response_model=None)
    async def completions(
        req: CompletionRequest, request: Request, authorization: Authorization = None
    ) -> Any:
        caller = keys.caller(authorization)
        return await create_completion(req, ctx, caller, request.is_disconnected)

    @app.post("/v1/responses", response_model=None)
    async def responses(
        req: ResponsesRequest, request: Request, authorization: Authorization = None
    ) -> Any:
        caller = keys.caller(authorization)
        return await create_response(req, ctx, caller, request.is_disconnected)

    @app.post("/v1/messages", response_model=None)
    async def messages(
        req: MessagesRequest,
        request: Request,
        authorization: Authorization = None,
        x_api_key: ApiKey = None,
    ) -> Any:
        caller = keys.caller(authorization, x_api_key)
        return await create_message(req, ctx, caller, request.is_disconnected)

    @app.post("/v1/responses/input_tokens")
    async def input_tokens(
        req: InputTokensRequest, authorization: Authorization = None
    ) -> dict[str, Any]:
        return await count_input_tokens(req, ctx, keys.caller(authorization))

    @app.post("/v1/messages/count_tokens")
    async def messages_count_tokens(
        req: CountTokensRequest, authorization: Authorization = None, x_api_key: ApiKey = None
    ) -> dict[str, Any]:
        return await count_tokens(req, ctx, keys.caller(authorization, x_api_key))

    @app.get("/v1/responses/{response_id}", response_model=None)
    async def retrieve(response_id: str, authorization: Authorization = None) -> Any:
        return get_response(response_id, ctx, keys.tenant(authorization))

    @app.get("/v1/models")
    async def models(authorization: Authorization = None) -> dict[str, Any]:
        keys.tenant(authorization)
        return {
            "object": "list",
            "data": [
                {
                    "id": ctx.model_name,
                    "object": "model",
                    "created": ctx.created,
                    "owned_by": "promptcache",
                }
            ],
        }

    @app.get("/health")
    async def health() -> JSONResponse:
        h = ctx.engine.health()
        body = {
            "status": "ok" if h.alive else "error",
            "model": ctx.model_name,
            "requests_in_flight": h.requests_in_flight,
            **({"detail": h.detail} if h.detail else {}),
        }
        return JSONResponse(body, status_code=200 if h.alive else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")
