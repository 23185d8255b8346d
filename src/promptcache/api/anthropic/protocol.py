"""Request bodies of Anthropic's Messages API, field for field as the API names them.

Text, `tool_use` and `tool_result` content (no images or documents) and custom tools
(server tools are refused by name in api/anthropic/tools.py). Unknown fields are refused
with a 400 in Anthropic's error shape, so no parameter is ever silently dropped.
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


class DirectCaller(_Strict):
    type: Literal["direct"]


class ToolUseBlock(_Strict):
    """An earlier call of the assistant's, sent back."""

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]
    cache_control: CacheControl | None = None
    caller: DirectCaller | None = None  # what a response's block carries, sent back
    toolset_name: None = None


class ToolResultBlock(_Strict):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None
    toolset_name: None = None


ContentBlock = TextBlock | ToolUseBlock | ToolResultBlock


class InputMessage(_Strict):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class CustomTool(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    input_schema: dict[str, Any]
    description: str | None = None
    cache_control: CacheControl | None = None
    type: Literal["custom"] | None = None
    strict: bool | None = None


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None  # type "tool"
    disable_parallel_tool_use: bool | None = None


class Metadata(_Strict):
    user_id: str | None = Field(default=None, max_length=256)


class ThinkingConfig(_Strict):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=1024)  # type "enabled"
    display: str | None = None


class JSONOutputFormat(_Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Strict):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JSONOutputFormat | None = None  # structured outputs (grammar-constrained)


class DiagnosticsParam(_Strict):
    """Names an earlier message to compare with (null: opt in without one); the Message
    then carries `diagnostics.cache_miss_reason` (api/cache_diagnostics.py)."""

    previous_message_id: str | None = None


class MessagesPrompt(_Strict):
    """The fields that make a Messages request's prompt (and its cache breakpoints and
    output constraint): what `POST /v1/messages/count_tokens` takes too."""

    model: str
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    cache_control: CacheControl | None = None  # automatic caching: the last block
    tools: list[dict[str, Any]] | None = None  # custom tools (api/anthropic/tools.py)
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    # recognized; honoured at its no-op values, other values refused (api/support.py)
    thinking: ThinkingConfig | None = None


class MessagesRequest(MessagesPrompt):
    max_tokens: int = Field(ge=1)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    stop_sequences: list[str] | None = None
    stream: bool | None = False
    metadata: Metadata | None = None
    diagnostics: DiagnosticsParam | None = None
    service_tier: Literal["auto", "standard_only"] | None = None  # one tier: both hold
    # extension: cache the prompt and generate nothing (no content; max_tokens is ignored)
    prompt_cache_prewarm: bool = False
    # recognized; honoured at their no-op values, other values refused (api/support.py)
    container: str | None = None
    inference_geo: str | None = None


class CountTokensRequest(MessagesPrompt):
    """`POST /v1/messages/count_tokens`: the prompt's fields, and `speed`."""

    speed: Literal["standard", "fast"] | None = None  # "standard" only (api/support.py)
