"""What every endpoint handler needs: the engine, the tokenizer, names, store and metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from promptcache.api.async_engine import AsyncEngine, EngineDead, EngineOverloaded, RequestHandle
from promptcache.api.errors import APIError, invalid
from promptcache.api.metrics import Metrics
from promptcache.api.store import ResponseStore
from promptcache.engine.llm_engine import RequestError
from promptcache.engine.sampling_params import SamplingParams

Disconnected = Callable[[], Awaitable[bool]]  # e.g. starlette's Request.is_disconnected


@dataclass(slots=True)
class ServerContext:
    engine: AsyncEngine
    tokenizer: Any
    model_name: str
    store: ResponseStore
    metrics: Metrics
    created: int

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
        self, prompt: list[int], params: SamplingParams, tenant: str, param: str
    ) -> RequestHandle:
        """Validate and queue a request, mapping engine refusals to OpenAI errors."""
        try:
            self.engine.validate(prompt, params)
            return self.engine.submit(prompt, params, cache_salt=tenant)
        except RequestError as exc:
            raise invalid(str(exc), param, exc.code) from exc
        except EngineOverloaded as exc:
            raise APIError(
                429,
                f"{exc}; retry after a short wait",
                "rate_limit_error",
                None,
                "server_overloaded",
            ) from exc
        except EngineDead as exc:
            raise APIError(500, str(exc), "server_error") from exc


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
