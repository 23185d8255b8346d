"""Request bodies of Anthropic's Messages API, field for field as the API names them.

Text content only (no tools, images or documents). Unknown fields are refused with a 400
in Anthropic's error shape, so no parameter is ever silently dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheControl(_Strict):
    """`{"type": "ephemeral", "ttl": "5m" | "1h"}`: the prompt up to here is cached."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None  # default 5m


class TextBlock(_Strict):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = None
    citations: list[Any] | None = None  # echoed by clients that resend replies; unused


class InputMessage(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[TextBlock]


class Metadata(_Strict):
    user_id: str | None = Field(default=None, max_length=256)


class MessagesRequest(_Strict):
    model: str
    messages: list[InputMessage] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlock] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    metadata: Metadata | None = None
    cache_control: CacheControl | None = None  # automatic caching: the last block
