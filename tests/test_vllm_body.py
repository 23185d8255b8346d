"""What the router sends a vLLM worker for a constrained request: our own grammar as vLLM's
`structured_outputs` (an EBNF grammar for a JSON answer, the structural tag for tool
calls), which XGrammar compiles and which accepts exactly our canonical forms."""

from __future__ import annotations

import json

import pytest
import xgrammar as xgr

from promptcache.engine.errors import RequestError
from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolChoice, ToolDef
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.router.vllm import completion_body, structured_outputs
from tests.api.tools_fixtures import WEATHER_SCHEMA

SCHEMA = json.dumps(WEATHER_SCHEMA)
WEATHER = ToolDef("get_weather", SCHEMA)


def _body(output: OutputSpec) -> dict:
    request = GenerationRequest([1, 2, 3], SamplingParams(max_tokens=8), output=output)
    return completion_body(request, "m", 8)


def _accepts(grammar: xgr.Grammar, text: str) -> bool:
    return bool(xgr.testing._is_grammar_accept_string(grammar, text))


def test_free_text_sends_no_structured_outputs() -> None:
    assert "structured_outputs" not in _body(OutputSpec())


def test_a_json_schema_is_sent_as_our_canonical_grammar() -> None:
    sent = _body(OutputSpec(OutputKind.JSON_SCHEMA, SCHEMA))["structured_outputs"]
    assert list(sent) == ["grammar"]
    grammar = xgr.Grammar.from_ebnf(sent["grammar"])
    assert _accepts(grammar, '{"city": "Lisbon", "unit": "celsius"}')
    assert not _accepts(grammar, '{"city":"Lisbon","unit":"celsius"}')  # not canonical
    assert not _accepts(grammar, '{"city": "Lisbon", "unit": "kelvin"}')


def test_a_forced_call_is_sent_as_the_structural_tag() -> None:
    spec = OutputSpec(tools=(WEATHER,), tool_choice=ToolChoice.REQUIRED, parallel=False)
    sent = _body(spec)["structured_outputs"]
    assert list(sent) == ["structural_tag"]
    grammar = xgr.Grammar.from_structural_tag(sent["structural_tag"])
    args = '{"city": "Oslo", "unit": "celsius"}'
    call = f'<tool_call>\n{{"name": "get_weather", "arguments": {args}}}\n</tool_call>'
    assert _accepts(grammar, call)
    assert not _accepts(grammar, "It is sunny.")


def test_a_schema_xgrammar_refuses_is_a_request_error() -> None:
    with pytest.raises(RequestError) as caught:
        structured_outputs(OutputSpec(OutputKind.JSON_SCHEMA, '{"type": "nonsense"}'))
    assert caught.value.param == "format"
