"""What every endpoint handler needs: the engine client, the tokenizer, names, store,
metrics and limits; prompt rendering off the event loop; and the one place that turns
engine refusals into API errors."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from promptcache.api.errors import APIError, refusal
from promptcache.api.limits import Limits
from promptcache.api.metrics import Metrics
from promptcache.api.prompts import render_prompt
from promptcache.api.replays import Replays
from promptcache.api.store import ResponseStore
from promptcache.api.tools import Format, Tools
from promptcache.config import EngineConfig, ServerConfig
from promptcache.engine.client import EngineClient, RequestStream
from promptcache.engine.errors import EngineDead, EngineOverloaded, RequestError
from promptcache.engine.request import GenerationRequest
from promptcache.ledger.compare import Fingerprints
from promptcache.text.chat import RenderedChat
from promptcache.text.token_bytes import TokenBytes

GRAMMAR_WAITERS = 16


@dataclass(frozen=True, slots=True)
class Rendering:
    """How prompts are rendered and remembered: `ServerConfig.canonical_tools`,
    `replay_answers` and `diagnostics_history`, and the engine's block size (what a finished
    request leaves reusable, for the providers' cache diagnostics)."""

    canonical_tools: bool = True
    replay_answers: int = 4096
    diagnostics_history: int = 1024
    block_size: int = 16
    min_breakpoint_tokens: int = 1024  # shorter breakpoints are not cached

    @classmethod
    def of(cls, server: ServerConfig, engine: EngineConfig) -> Rendering:
        return cls(
            server.canonical_tools,
            server.replay_answers,
            server.diagnostics_history,
            engine.block_size,
            engine.min_breakpoint_tokens,
        )


@dataclass(slots=True)
class ServerContext:
    engine: EngineClient
    tokenizer: Any
    model_name: str
    store: ResponseStore
    metrics: Metrics
    created: int
    limits: Limits = field(default_factory=lambda: Limits.of(ServerConfig()))
    # one thread renders prompts (chat template + tokenizer), so a long prompt never
    # stalls the event loop, and the tokenizer is never used by two threads at once
    renderer: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="render")
    )
    # threads that wait for grammars (a cache hit returns at once; a compile runs in the
    # engine's own few compile threads, each wait bounded by grammar_compile_timeout_s)
    grammar_threads: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(GRAMMAR_WAITERS, thread_name_prefix="grammar")
    )
    rendering: Rendering = field(default_factory=Rendering)
    replays: Replays = field(init=False)
    fingerprints: Fingerprints = field(init=False)  # for the providers' cache diagnostics
    token_bytes: TokenBytes = field(init=False)  # token text and bytes, for logprobs

    def __post_init__(self) -> None:
        self.replays = Replays(self.tokenizer, self.rendering.replay_answers)
        self.fingerprints = Fingerprints(self.rendering.diagnostics_history)
        self.token_bytes = TokenBytes(self.tokenizer)

    @property
    def canonical_tools(self) -> bool:
        return self.rendering.canonical_tools

    async def render(
        self,
        messages: list[dict[str, Any]],
        param: str,
        tools: Tools | None = None,
        tenant: str | None = None,
        fmt: Format | None = None,
    ) -> RenderedChat:
        """The prompt of `messages` (at most `max_messages`), `tools` and the answer's
        format `fmt`, rendered in the render thread; with `tenant`, its earlier answers
        replay as they were generated."""
        self.limits.check_messages(len(messages), param)
        loop = asyncio.get_running_loop()
        replay = partial(self.replays.lookup, tenant) if tenant is not None else None
        return await loop.run_in_executor(
            self.renderer, render_prompt, self.tokenizer, messages, tools, replay, fmt
        )

    async def prepare(self, request: GenerationRequest, format_param: str) -> None:
        """Check the request's tools and schemas against the size limits, then compile its
        output grammar, if any, from a grammar thread (never the event loop or the
        engine's step loop); the engine then finds it cached. A schema too large, too deep,
        that cannot be compiled or compiles past the time budget is a 400 naming its tool,
        or `format_param` for the answer's; no compile thread free in time is a 429."""
        self.limits.schemas.check(request.output, format_param)
        if not request.output.constrained:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(
                self.grammar_threads, self.engine.warm_grammar, request.output
            )
        except RequestError as exc:
            raise refusal(exc, format_param, format_param) from exc
        except EngineOverloaded as exc:
            raise self.overloaded(exc) from exc

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise APIError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model",
                "model_not_found",
            )

    def submit(
        self, request: GenerationRequest, param: str, format_param: str = "response_format"
    ) -> RequestStream:
        """Queue a request, mapping engine refusals to OpenAI errors (`param` names the
        field a too-long prompt came from, `format_param` the answer's format)."""
        try:
            return self.engine.submit(request)
        except RequestError as exc:
            raise refusal(exc, param, format_param) from exc
        except EngineOverloaded as exc:
            raise self.overloaded(exc) from exc
        except EngineDead as exc:
            raise APIError(500, str(exc), "server_error") from exc

    def overloaded(self, exc: EngineOverloaded) -> APIError:
        """A 429 telling the client to retry after `retry_after_s`."""
        wait = self.limits.retry_after_s
        msg = f"{exc}; retry after {wait:g} s"
        err = APIError(429, msg, "rate_limit_error", None, "server_overloaded")
        err.headers = retry_after_headers(wait)
        return err


def retry_after_headers(seconds: float) -> dict[str, str]:
    """`Retry-After` in whole seconds (rounded up, as HTTP allows no fraction) and the
    exact wait in `retry-after-ms`, which the OpenAI and Anthropic SDKs read first."""
    return {"retry-after": str(math.ceil(seconds)), "retry-after-ms": str(round(seconds * 1000))}


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
