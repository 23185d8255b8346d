"""What every endpoint handler needs: the engine client, the tokenizer, names, store and
metrics; and the one place that turns engine refusals into OpenAI errors."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from promptcache.api.errors import APIError, invalid
from promptcache.api.metrics import Metrics
from promptcache.api.store import ResponseStore
from promptcache.cache.settings import CacheSettings, Retention
from promptcache.engine.client import EngineClient, RequestStream
from promptcache.engine.errors import EngineDead, EngineOverloaded, RequestError
from promptcache.engine.request import GenerationRequest


@dataclass(slots=True)
class ServerContext:
    engine: EngineClient
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

    def submit(self, request: GenerationRequest, param: str) -> RequestStream:
        """Queue a request, mapping engine refusals to OpenAI errors (`param` names the
        field a too-long prompt came from)."""
        try:
            return self.engine.submit(request)
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


def cache_settings(tenant: str, retention: str | None, key: str | None) -> CacheSettings:
    """The request's cache settings from OpenAI's fields (retention default `in_memory`)."""
    return CacheSettings(
        tenant=tenant,
        retention=Retention(retention) if retention else Retention.IN_MEMORY,
        prompt_cache_key=key,
    )


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())
