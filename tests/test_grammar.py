"""Grammar-constrained decoding in the engine (bundled model, float32): outputs valid
against their schema or tool format, rows without a grammar untouched in the same batch,
the same tokens with the prefix cache on and off, a cut-short output ending cleanly, and
compiled grammars cached."""

from __future__ import annotations

import json

import jsonschema
import pytest

from promptcache.config import EngineConfig
from promptcache.engine.errors import RequestError
from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolChoice, ToolDef
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import LoadedModel
from promptcache.text.chat import chat_prompt_ids
from promptcache.text.tools import parse_output

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
TEXT = json.dumps(SCHEMA)
GREEDY = SamplingParams(max_tokens=80, temperature=0)


def _engine(model: LoadedModel, **config: object) -> LLMEngine:
    return LLMEngine(model, EngineConfig(kv_cache_bytes=64 << 20, **config))  # type: ignore[arg-type]


def _prompt(model: LoadedModel, text: str) -> list[int]:
    return chat_prompt_ids(model.tokenizer, [{"role": "user", "content": text}])


def _schema_request(
    model: LoadedModel, text: str, params: SamplingParams = GREEDY
) -> GenerationRequest:
    spec = OutputSpec(kind=OutputKind.JSON_SCHEMA, schema=TEXT)
    return GenerationRequest(_prompt(model, text), params, output=spec)


def test_schema_output_validates_and_free_rows_are_untouched(bundled: LoadedModel) -> None:
    engine = _engine(bundled)
    free = GenerationRequest(_prompt(bundled, "Name a color."), GREEDY)
    [alone] = engine.run([free])
    outs = engine.run([_schema_request(bundled, "Weather in Paris as JSON?"), free])
    assert outs[0].finish_reason == "stop"
    jsonschema.validate(json.loads(outs[0].text), SCHEMA)
    assert outs[1].token_ids == alone.token_ids  # same batch, no grammar: same tokens


def test_tool_calls_follow_the_format_and_the_schema(bundled: LoadedModel) -> None:
    engine = _engine(bundled)
    tools = (ToolDef("get_weather", TEXT), ToolDef("get_time", '{"type": "object"}'))
    for choice, name in ((ToolChoice.REQUIRED, None), (ToolChoice.NAMED, "get_time")):
        spec = OutputSpec(tools=tools, tool_choice=choice, tool_name=name, parallel=False)
        request = GenerationRequest(_prompt(bundled, "Weather in Rome?"), GREEDY, output=spec)
        [out] = engine.run([request])
        content, calls = parse_output(out.text)
        assert out.finish_reason == "stop", repr(out.text)
        assert content == "" and len(calls) == 1
        assert calls[0].name == (name or calls[0].name)
        if calls[0].name == "get_weather":
            jsonschema.validate(json.loads(calls[0].arguments), SCHEMA)
        else:
            assert isinstance(json.loads(calls[0].arguments), dict)


def test_same_tokens_with_the_cache_on_and_off(bundled: LoadedModel) -> None:
    text = "Weather in Oslo, as JSON? " * 3
    sampled = SamplingParams(max_tokens=60, temperature=0.8, seed=7)
    runs = []
    for caching in (True, False):
        engine = _engine(bundled, enable_prefix_caching=caching)
        first = engine.run(
            [_schema_request(bundled, text), _schema_request(bundled, text, sampled)]
        )
        again = engine.run(
            [_schema_request(bundled, text), _schema_request(bundled, text, sampled)]
        )
        assert [o.token_ids for o in first] == [o.token_ids for o in again]
        runs.append([o.token_ids for o in first])
    assert runs[0] == runs[1]


def test_a_cut_short_output_ends_with_length(bundled: LoadedModel) -> None:
    engine = _engine(bundled)
    [out] = engine.run(
        [_schema_request(bundled, "Weather?", SamplingParams(max_tokens=5, temperature=0))]
    )
    assert out.finish_reason == "length" and len(out.token_ids) == 5


def test_compiled_grammars_are_cached_and_bad_schemas_named(bundled: LoadedModel) -> None:
    engine = _engine(bundled)
    engine.run([_schema_request(bundled, "a"), _schema_request(bundled, "b")])
    stats = engine.stats()
    assert stats["grammar_compiles_total"] == 1 and stats["grammar_cache_hits_total"] == 1
    bad = OutputSpec(kind=OutputKind.JSON_SCHEMA, schema='{"type": "object", "minProperties": "x"}')
    with pytest.raises(RequestError) as info:
        engine.submit(GenerationRequest(_prompt(bundled, "a"), GREEDY, output=bad))
    assert info.value.param == "format" and info.value.code == "invalid_schema"
    tools = OutputSpec(
        tools=(ToolDef("f", '{"type": "object", "required": 3}'),), tool_choice=ToolChoice.REQUIRED
    )
    with pytest.raises(RequestError) as info:
        engine.submit(GenerationRequest(_prompt(bundled, "a"), GREEDY, output=tools))
    assert info.value.param == "tools[0]"
    assert engine.stats()["grammar_compile_failures_total"] == 2
