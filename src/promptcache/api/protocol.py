"""Request bodies of the OpenAI endpoints we serve, field for field as the API names them.

Unknown fields are refused (`extra="forbid"` -> 400 "Unrecognized request argument"), so no
parameter is ever silently dropped. Response bodies are built in `chat.py`/`responses.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Retention = Literal["in_memory", "24h"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- explicit prompt caching (both endpoints) --------------------------------------------


class PromptCacheBreakpoint(_Strict):
    """On a content part: the prompt up to the end of this part is a reusable prefix."""

    mode: Literal["explicit"]
    ttl: Literal["30m", "12h"] | None = None  # default: the request's ttl


class PromptCacheOptions(_Strict):
    mode: Literal["implicit", "explicit"] | None = None  # default implicit
    ttl: Literal["30m", "12h"] | None = None  # default 30m (Chat Completions: 30m only)


class ResponsesCacheOptions(PromptCacheOptions):
    """Responses' options add `prewarm` (compute and cache the prompt, generate nothing)
    and name an earlier response to compare with: the Response then carries
    `prompt_cache_diagnostics` (api/cache_diagnostics.py)."""

    prewarm: bool | None = None  # default false
    comparison_response_id: str | None = None


# -- chat completions -------------------------------------------------------------------


class ChatTextPart(_Strict):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


# -- tools and output formats (Chat Completions' shapes; responses.py/anthropic have theirs)

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


class FunctionDefinition(_Strict):
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


class FunctionCall(_Strict):
    name: str
    arguments: str


class ChatToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class TextFormat(_Strict):
    type: Literal["text"]


class JSONObjectFormat(_Strict):
    type: Literal["json_object"]


class JSONSchemaSpec(_Strict):
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class JSONSchemaFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = TextFormat | JSONObjectFormat | JSONSchemaFormat


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ChatTextPart] | None = None
    name: str | None = None
    tool_calls: list[ChatToolCall] | None = None  # assistant
    tool_call_id: str | None = None  # tool
    # what the SDKs send back on an assistant message they received (no-op values)
    refusal: None = None
    annotations: list[Any] | None = None
    audio: None = None
    function_call: None = None


class StreamOptions(_Strict):
    include_usage: bool = False
    # extension (vLLM's): with include_usage, the usage so far on every chunk too
    continuous_usage_stats: bool = False
    include_obfuscation: bool | None = None  # false only (api/support.py)


class ResponsesStreamOptions(_Strict):
    include_obfuscation: bool | None = None  # false only (api/support.py)


class CustomToolSpec(_Strict):
    """A custom (free-form text) tool's definition: recognized, refused by name."""

    name: str
    description: str | None = None
    format: dict[str, Any] | None = None


class ChatCustomTool(_Strict):
    type: Literal["custom"]
    custom: CustomToolSpec


# Every `include` value of OpenAI's schema: all vacuous here (no such items are produced)
# but message.output_text.logprobs, honoured with top_logprobs (api/logprobs.py).
Include = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority"]
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
Verbosity = Literal["low", "medium", "high"]


class ChatCompletionRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # extension (vLLM's): generate past EOS, to max_tokens
    prompt_cache_key: str | None = Field(default=None, max_length=1024)
    prompt_cache_retention: Retention | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    # extension: cache the prompt and generate nothing (Responses' prompt_cache_options.prewarm)
    prompt_cache_prewarm: bool = False
    user: str | None = None  # accepted for compatibility; nothing here acts on it
    tools: list[ChatTool | ChatCustomTool] | None = None  # custom: refused by name
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = Field(default=None, discriminator="type")
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # recognized; honoured at their no-op values, other values refused (api/support.py)
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    service_tier: ServiceTier | None = None
    store: bool | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    verbosity: Verbosity | None = None
    reasoning_effort: Effort | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None  # deprecated (tools)
    function_call: str | dict[str, Any] | None = None  # deprecated (tool_choice)


# -- completions ------------------------------------------------------------------------

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_Strict):
    """`POST /v1/completions` (OpenAI's legacy Completions), with our cache fields."""

    model: str
    prompt: Prompt = "<|endoftext|>"
    max_tokens: int | None = Field(default=16, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    best_of: int | None = Field(default=None, ge=0, le=20)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # extension (vLLM's): generate past EOS, to max_tokens
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool | None = False
    suffix: str | None = None  # refused unless empty (api/support.py)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None  # accepted for compatibility; nothing here acts on it
    prompt_cache_key: str | None = Field(default=None, max_length=1024)
    prompt_cache_retention: Retention | None = None
    prompt_cache_options: PromptCacheOptions | None = None


# -- responses --------------------------------------------------------------------------


class InputTextPart(_Strict):
    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None  # echoed back on assistant output items
    logprobs: list[Any] | None = None
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class InputMessage(_Strict):
    type: Literal["message"] | None = None
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[InputTextPart]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(_Strict):
    """An earlier function call, sent back as input (or carried by previous_response_id)."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputItem(_Strict):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputTextPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ResponsesFunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ResponsesNamedChoice(_Strict):
    type: Literal["function"]
    name: str


class ResponsesJSONSchemaFormat(_Strict):
    type: Literal["json_schema"]
    name: str = Field(pattern=TOOL_NAME)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class ResponsesText(_Strict):
    format: TextFormat | JSONObjectFormat | ResponsesJSONSchemaFormat | None = Field(
        default=None, discriminator="type"
    )
    verbosity: Verbosity | None = None  # "medium" only: a model without it (api/support.py)


class Reasoning(_Strict):
    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


InputItem = InputMessage | FunctionCallItem | FunctionCallOutputItem


class ResponsesRequest(_Strict):
    model: str
    input: str | list[InputItem]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stream: bool | None = False
    prompt_cache_key: str | None = Field(default=None, max_length=1024)
    prompt_cache_retention: Retention | None = None
    prompt_cache_options: ResponsesCacheOptions | None = None
    previous_response_id: str | None = None
    store: bool | None = True
    metadata: dict[str, str] | None = None
    user: str | None = None
    # tools: function tools; other types are refused by name (api/responses_tools.py)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | ResponsesNamedChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(default=None, ge=1)
    text: ResponsesText | None = None
    stream_options: ResponsesStreamOptions | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    include: list[Include] | None = None
    # recognized; honoured at their no-op values, other values refused (api/support.py)
    safety_identifier: str | None = Field(default=None, max_length=64)
    service_tier: ServiceTier | None = None
    reasoning: Reasoning | None = None
    background: bool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    prompt: dict[str, Any] | None = None
    conversation: str | dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None


class InputTokensRequest(_Strict):
    """OpenAI's `InputTokenCountParams`, field for field, and the cache extensions."""

    model: str | None = None
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None  # function tools (api/responses_tools.py)
    tool_choice: Literal["none", "auto", "required"] | ResponsesNamedChoice | None = None
    parallel_tool_calls: bool | None = None
    text: ResponsesText | None = None
    # extensions: what decides the worker and the cache entries a request would meet
    prompt_cache_key: str | None = Field(default=None, max_length=1024)
    prompt_cache_retention: Retention | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    # recognized; honoured at their no-op values, other values refused (api/support.py)
    reasoning: Reasoning | None = None
    truncation: Literal["auto", "disabled"] | None = None
    conversation: str | dict[str, Any] | None = None
    personality: str | None = Field(default=None, max_length=64)


def message_parts(
    content: str | list[ChatTextPart] | list[InputTextPart] | None,
) -> str | list[str]:
    """A message's content as the renderer takes it: a string, or its parts' texts in order
    (rendered joined, with the token position where each part ends kept)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return [part.text for part in content]
