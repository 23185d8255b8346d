"""An `OutputSpec` as grammar source text, tokenizer-free: what `compiler` compiles for our
engine, and what the router hands to vLLM workers as their structured-output parameters.

- A JSON answer (a schema, or any object) is an XGrammar EBNF grammar of canonical JSON
  (`text.tools.SEPARATORS`, no free whitespace, properties in schema order), so answers
  replay token for token.
- Tool calls are an XGrammar structural tag: each tool a tag whose content is its
  arguments' grammar, between the default call format's fixed texts (`text.tools`).
  `required`/named calls are constrained from the first token; `auto` lets text run until
  `<tool_call>` opens a call; without `parallel`, one call ends the output.

Building the source checks the schemas (XGrammar parses them): a schema it cannot take is
a `RequestError` naming the request field it came from.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import xgrammar as xgr

from promptcache.engine.errors import RequestError
from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolChoice, ToolDef
from promptcache.text import tools as fmt

ANY_OBJECT = '{"type": "object"}'


class SourceKind(enum.Enum):
    GRAMMAR = "grammar"  # XGrammar EBNF
    STRUCTURAL_TAG = "structural_tag"  # XGrammar structural tag (JSON)


@dataclass(frozen=True, slots=True)
class GrammarSource:
    """A constrained spec's grammar as text, and which kind of text it is."""

    kind: SourceKind
    text: str


@lru_cache(maxsize=256)
def grammar_source(spec: OutputSpec) -> GrammarSource:
    """The grammar of a `constrained` spec (remembered for the latest 256 specs)."""
    if spec.calls_tools:
        return GrammarSource(SourceKind.STRUCTURAL_TAG, tools_tag(spec))
    return GrammarSource(SourceKind.GRAMMAR, str(json_grammar(answer_schema(spec), "format")))


def answer_schema(spec: OutputSpec) -> str:
    """The JSON schema a text answer must match."""
    return spec.schema if spec.kind is OutputKind.JSON_SCHEMA else ANY_OBJECT


def json_grammar(schema: str, param: str) -> xgr.Grammar:
    """A schema's grammar in canonical JSON; `param` names the request field it came from."""
    try:
        return xgr.Grammar.from_json_schema(
            schema, any_whitespace=False, separators=fmt.SEPARATORS, strict_mode=True
        )
    except Exception as exc:  # the library's errors are RuntimeError/ValueError/its own
        raise RequestError(
            f"the JSON schema in {param} cannot be compiled: {first_line(exc)}",
            "invalid_schema",
            param,
        ) from exc


def first_line(exc: BaseException) -> str:
    """The telling line of a library's error (its last)."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _tag(tool: ToolDef, index: int) -> dict[str, Any]:
    grammar = json_grammar(tool.parameters or ANY_OBJECT, f"tools[{index}]")
    return {
        "type": "tag",
        "begin": fmt.CALL_OPEN + fmt.CALL_HEAD + tool.name + fmt.ARGS_HEAD,
        "content": {"type": "grammar", "grammar": str(grammar)},
        "end": fmt.CALL_CLOSE,
    }


def tools_tag(spec: OutputSpec) -> str:
    """The structural tag (JSON text) of a spec that calls tools."""
    tags = [
        _tag(t, i)
        for i, t in enumerate(spec.tools)
        if spec.tool_choice is not ToolChoice.NAMED or t.name == spec.tool_name
    ]
    one = not spec.parallel
    calls = {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": fmt.CALL_SEPARATOR,
        "at_least_one": True,
        "stop_after_first": one,
    }
    form: dict[str, Any] = calls
    if spec.tool_choice is ToolChoice.AUTO:
        if spec.kind is OutputKind.TEXT:
            form = {"type": "triggered_tags", "triggers": [fmt.TRIGGER], "tags": tags}
            form["stop_after_first"] = one
        else:  # a JSON answer, or calls
            answer = str(json_grammar(answer_schema(spec), "format"))
            form = {"type": "or", "elements": [{"type": "grammar", "grammar": answer}, calls]}
    return json.dumps({"type": "structural_tag", "format": form})
