"""Which values of the recognized request fields this server can honour.

Every field of OpenAI's and Anthropic's request schemas is recognized (declared in
api/protocol.py and api/anthropic/protocol.py): a field in no schema is "unrecognized".
A field this server cannot act on is accepted at its no-op value (what SDKs send by
default: `include: []`, `service_tier: "auto"`, `background: false`, ...), and any other
value is a 400 that names the field and says why it is not supported here
(`code: unsupported_value`). The rules of each endpoint are tables below; the handlers
call `refuse_unsupported` first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from promptcache.api.errors import APIError, invalid

Accepts = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """`field` (a dotted path into the request) is honoured only where `accepts` its value;
    `why` says what the refused values ask for that this server does not do."""

    field: str
    accepts: Accepts
    why: str


def absent(value: Any) -> bool:
    return value is None


def one_of(*values: Any) -> Accepts:
    return lambda value: value is None or value in values


def falsy(value: Any) -> bool:
    return not value


def only_text(value: Any) -> bool:
    return value is None or list(value) == ["text"]


def _no_reasoning(value: Any) -> bool:
    if value is None:
        return True
    effort, summary = _get(value, "effort"), _get(value, "summary")
    return effort in (None, "none") and summary is None and _get(value, "generate_summary") is None


NO_REASONING = "this model does not reason (no reasoning effort or summaries to set)"
SERVICE_TIER = "there is one service tier here, 'default' ('auto' picks it)"
AUDIO = "this model reads and writes text only"
VERBOSITY = "this model has no verbosity setting; 'medium' is what it does"
OBFUSCATION = "stream obfuscation is not done here (a local server has no side channel to pad)"
HOSTED = "it runs on OpenAI's servers"

NO_THINKING = Rule(
    "thinking", lambda v: v is None or v.type != "enabled", "this model does not think"
)
NO_EFFORT = Rule("output_config.effort", absent, "this model has no effort setting")
NO_REASONING_RULE = Rule("reasoning", _no_reasoning, NO_REASONING)
MEDIUM_VERBOSITY = Rule("text.verbosity", one_of("medium"), VERBOSITY)
NO_TRUNCATION = Rule("truncation", one_of("disabled"), "inputs are never truncated here")
NO_CONVERSATION = Rule(
    "conversation", absent, "conversations are not kept here: use previous_response_id"
)

CHAT_RULES = (
    Rule("service_tier", one_of("auto", "default"), SERVICE_TIER),
    Rule("modalities", only_text, AUDIO),
    Rule("audio", absent, AUDIO),
    Rule("verbosity", one_of("medium"), VERBOSITY),
    Rule("reasoning_effort", one_of("none"), NO_REASONING),
    Rule("store", falsy, "chat completions are not stored here (the Responses API stores)"),
    Rule("prediction", absent, "predicted outputs are not supported here"),
    Rule("web_search_options", absent, f"web search is a hosted tool: {HOSTED}"),
    Rule("functions", absent, "'functions' is deprecated: send 'tools'"),
    Rule("function_call", absent, "'function_call' is deprecated: send 'tool_choice'"),
    Rule("stream_options.include_obfuscation", falsy, OBFUSCATION),
)

RESPONSES_RULES = (
    Rule("service_tier", one_of("auto", "default"), SERVICE_TIER),
    NO_REASONING_RULE,
    MEDIUM_VERBOSITY,
    Rule("background", falsy, "background responses are not supported here: stream instead"),
    NO_TRUNCATION,
    Rule("prompt", absent, f"prompt templates are stored by OpenAI: {HOSTED}"),
    NO_CONVERSATION,
    Rule("context_management", absent, "context compaction is not done here"),
    Rule("stream_options.include_obfuscation", falsy, OBFUSCATION),
)

INPUT_TOKENS_RULES = (
    NO_REASONING_RULE,
    MEDIUM_VERBOSITY,
    NO_TRUNCATION,
    NO_CONVERSATION,
    Rule("personality", absent, "this model has no personality presets"),
)

COMPLETIONS_RULES = (
    Rule("suffix", falsy, "insertion (text after the completion) needs a fill-in-the-middle model"),
    Rule("max_tokens", lambda v: v is None or v >= 1, "ask for at least 1 token (echo included)"),
    Rule("stream_options.include_obfuscation", falsy, OBFUSCATION),
)

ANTHROPIC_RULES = (
    Rule("container", absent, "code execution containers run on Anthropic's servers"),
    Rule("inference_geo", absent, "inference runs on this server, wherever it is"),
    NO_THINKING,
    NO_EFFORT,
)

COUNT_TOKENS_RULES = (
    NO_THINKING,
    NO_EFFORT,
    Rule("speed", one_of("standard"), "there is one speed here, 'standard'"),
)


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def value_at(req: BaseModel, path: str) -> Any:
    value: Any = req
    for name in path.split("."):
        if value is None:
            return None
        value = _get(value, name)
    return value


def _shown(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def refusal(rule: Rule, value: Any) -> APIError:
    return invalid(
        f"'{rule.field}': {_shown(value)} is not supported here: {rule.why}",
        rule.field,
        "unsupported_value",
    )


def refuse_unsupported(req: BaseModel, rules: tuple[Rule, ...]) -> None:
    """A 400 naming the first field whose value this server cannot honour."""
    for rule in rules:
        value = value_at(req, rule.field)
        if not rule.accepts(value):
            raise refusal(rule, value)
