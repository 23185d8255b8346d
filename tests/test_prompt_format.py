"""The answer's format in the prompt (`render_prompt`): shown after the tools and before the
system prompt, in one preamble system message with the tools; `tools_end` still where the
tools end; one canonical text for one schema whatever its key order.

Uses the bundled SmolLM2 tokenizer (ChatML; its template takes no tools, so they are shown
in the preamble), and the same tokenizer behind a template that takes tools itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoTokenizer

from promptcache.api.prompts import render_prompt
from promptcache.api.tools import Format, Tool, Tools, tool_set
from promptcache.engine.grammar.spec import OutputKind
from promptcache.model.loading.loader import resolve_model_path
from promptcache.text.chat import MessageSpan
from promptcache.text.formats import format_prompt
from tests.api.tools_fixtures import WEATHER_SCHEMA

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
REPORT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "temperature": {"type": "number"},
    },
    "required": ["summary", "temperature"],
    "additionalProperties": False,
}
REPORT_TEXT = (
    '{"additionalProperties": false, "properties": {"summary": {"type": "string"}, '
    '"temperature": {"type": "number"}}, "required": ["summary", "temperature"], '
    '"type": "object"}'
)
SCHEMA_FORMAT = Format(OutputKind.JSON_SCHEMA, REPORT, "weather_report", "The weather now.")


@pytest.fixture(scope="module")
def tok() -> Any:
    return AutoTokenizer.from_pretrained(resolve_model_path(None))


def decode(tok: Any, ids: list[int]) -> str:
    return str(tok.backend_tokenizer.decode(ids, skip_special_tokens=False))


def weather_tools() -> Tools:
    return tool_set([Tool("get_weather", "Get the current weather.", WEATHER_SCHEMA)], True)


def reversed_keys(value: Any, keep_order: bool = False) -> Any:
    """`value` with every object's keys in reverse order, except the members of a schema's
    `properties` (their order is the order the answer is written in): the same schema, sent
    by another client."""
    if isinstance(value, dict):
        keys = list(value) if keep_order else list(reversed(value))
        return {k: reversed_keys(value[k], k == "properties" and not keep_order) for k in keys}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


def test_the_format_part_text() -> None:
    assert format_prompt(None) == (
        "# Response format\n\nRespond with one JSON object only, with no text before or after it."
    )
    assert format_prompt(REPORT_TEXT, "weather_report", "The weather now.") == (
        "# Response format\n\n"
        "Respond with one JSON object only, with no text before or after it, that conforms "
        "to the JSON schema within <schema></schema> XML tags.\n"
        "Name: weather_report\n"
        "Description: The weather now.\n"
        f"<schema>\n{REPORT_TEXT}\n</schema>"
    )
    assert format_prompt(REPORT_TEXT) == (  # Anthropic's: no name, no description
        "# Response format\n\n"
        "Respond with one JSON object only, with no text before or after it, that conforms "
        "to the JSON schema within <schema></schema> XML tags.\n"
        f"<schema>\n{REPORT_TEXT}\n</schema>"
    )
    assert SCHEMA_FORMAT.prompt() == format_prompt(
        REPORT_TEXT, "weather_report", "The weather now."
    )
    assert Format(OutputKind.JSON_OBJECT).prompt() == format_prompt(None)
    assert Format().prompt() is None


def test_the_schema_sits_between_the_tools_and_the_system_prompt(tok: Any) -> None:
    tools = weather_tools()
    rendered = render_prompt(tok, MESSAGES, tools, fmt=SCHEMA_FORMAT)
    text = decode(tok, rendered.token_ids)
    assert text.startswith("<|im_start|>system\n# Tools\n\n")
    shown = SCHEMA_FORMAT.prompt()
    assert shown is not None
    preamble = text[: text.index("<|im_end|>")]
    assert preamble.endswith(f"</tool_call>\n\n{shown}")  # a blank line after the tools
    assert text.index("</tools>") < text.index(REPORT_TEXT) < text.index("Answer briefly.")
    # The spans are the request's own messages, as without a format.
    system, user = rendered.messages
    assert (system.index, system.role, user.index, user.role) == (0, "system", 1, "user")
    assert system.content_start is not None and user.content_start is not None
    ids = rendered.token_ids
    assert decode(tok, ids[system.content_start : system.content_end]) == "Answer briefly."
    assert decode(tok, ids[user.content_start : user.content_end]) == MESSAGES[1]["content"]


def test_tools_end_is_where_the_tools_end_with_a_format_after_them(tok: Any) -> None:
    tools = weather_tools()
    plain = render_prompt(tok, MESSAGES, tools)
    rendered = render_prompt(tok, MESSAGES, tools, fmt=SCHEMA_FORMAT)
    assert rendered.tools_end is not None and rendered.tools_end == plain.tools_end
    # The tools part renders to the same tokens with or without a format after it.
    assert rendered.token_ids[: rendered.tools_end] == plain.token_ids[: plain.tools_end]
    assert decode(tok, rendered.token_ids[: rendered.tools_end]).endswith("</tool_call>")
    after = decode(tok, rendered.token_ids[rendered.tools_end :])
    assert after.startswith("\n\n# Response format\n\n")


def test_a_format_without_tools_is_the_preamble_alone(tok: Any) -> None:
    rendered = render_prompt(tok, MESSAGES, fmt=Format(OutputKind.JSON_OBJECT))
    assert rendered.tools_end is None
    text = decode(tok, rendered.token_ids)
    assert text.startswith(
        "<|im_start|>system\n# Response format\n\nRespond with one JSON object only, with no "
        "text before or after it.<|im_end|>\n<|im_start|>system\nAnswer briefly.<|im_end|>"
    )
    assert [(m.index, m.role) for m in rendered.messages] == [(0, "system"), (1, "user")]


def test_a_text_format_renders_as_no_format(tok: Any) -> None:
    plain = render_prompt(tok, MESSAGES)
    assert render_prompt(tok, MESSAGES, fmt=Format()) == plain
    assert "# Response format" not in decode(tok, plain.token_ids)


def test_the_same_schema_with_keys_reordered_renders_the_same_ids(tok: Any) -> None:
    other = Format(
        OutputKind.JSON_SCHEMA, reversed_keys(REPORT), "weather_report", "The weather now."
    )
    assert list(other.schema or {}) != list(REPORT)  # really sent otherwise
    tools = weather_tools()
    one = render_prompt(tok, MESSAGES, tools, fmt=SCHEMA_FORMAT)
    two = render_prompt(tok, MESSAGES, tools, fmt=other)
    assert one.token_ids == two.token_ids and one.tools_end == two.tools_end
    assert REPORT_TEXT in decode(tok, two.token_ids)  # properties keep their order


NATIVE_TEMPLATE = (
    "{% if tools %}<|im_start|>tools\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class NativeTools:
    """The bundled tokenizer behind a template that shows `tools` itself."""

    chat_template = NATIVE_TEMPLATE

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.backend_tokenizer = tok.backend_tokenizer

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        return str(self.tok.apply_chat_template(messages, chat_template=NATIVE_TEMPLATE, **kwargs))


def test_a_template_that_takes_tools_gets_the_format_as_its_own_system_message(
    tok: Any,
) -> None:
    native = NativeTools(tok)
    rendered = render_prompt(native, MESSAGES, weather_tools(), fmt=SCHEMA_FORMAT)
    text = decode(tok, rendered.token_ids)
    assert text.startswith("<|im_start|>tools\n")
    assert f"<|im_start|>system\n{SCHEMA_FORMAT.prompt()}<|im_end|>\n" in text
    assert text.index("# Response format") < text.index("Answer briefly.")
    assert rendered.tools_end is None  # the template placed the tools
    system, user = rendered.messages
    assert isinstance(system, MessageSpan) and (system.index, system.role) == (0, "system")
    assert system.content_start is not None
    ids = rendered.token_ids
    assert decode(tok, ids[system.content_start : system.content_end]) == "Answer briefly."
    assert (user.index, user.role) == (1, "user")
