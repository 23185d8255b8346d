"""n > 1 (`engine.choices`): the n choices of one prompt compute its full blocks once and
hold them by reference, each computing only its last partial block; choice j samples with
seed + j exactly as a separate request with that seed would."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from promptcache.engine.choices import choice_id, fan_out, merged_usage
from promptcache.engine.outputs import Usage
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.engine.wire import request_from_json, request_to_json
from promptcache.model.loading.loader import LoadedModel
from tests.helpers import random_tokens, run_to_end

SEEDED = SamplingParams(max_tokens=8, temperature=1.0, seed=11, ignore_eos=True)
BLOCK = 16


def _request(prompt: list[int], params: SamplingParams = SEEDED) -> GenerationRequest:
    return GenerationRequest(prompt, params, request_id="r")


def _prefill_tokens(engine: Any) -> list[int]:
    """Wrap the scheduler to record the prompt tokens each step computes."""
    computed: list[int] = []
    schedule = engine.scheduler.schedule

    def recording() -> Any:
        out = schedule()
        prompt = 0
        for item in out.scheduled:
            start, n = item.seq.num_computed, item.num_tokens
            prompt += max(0, min(start + n, item.seq.num_prompt_tokens) - start)
        computed.append(prompt)
        return out

    engine.scheduler.schedule = recording
    return computed


def test_fan_out_ids_seeds_and_choice() -> None:
    choices = fan_out(_request([1, 2, 3]), 3)
    assert [c.request_id for c in choices] == ["r", "r-1", "r-2"]
    assert [c.params.seed for c in choices] == [11, 12, 13]
    assert [c.choice for c in choices] == [0, 1, 2]
    unseeded = fan_out(_request([1], SamplingParams(seed=None)), 2)
    assert [c.params.seed for c in unseeded] == [None, None]
    assert choice_id("r", 0) == "r" and choice_id("r", 4) == "r-4"
    with pytest.raises(ValueError):
        fan_out(_request([1]), 0)
    with pytest.raises(ValueError):
        fan_out(dataclasses.replace(_request([1]), request_id=None), 2)


def test_merged_usage_counts_the_prompt_once() -> None:
    a = Usage(100, 0, 96, 5, 0, 96)
    b = Usage(100, 0, 0, 7, 96, 0)
    assert merged_usage([a, b]) == Usage(100, 0, 96, 12, 0, 96)


def test_choices_share_the_prompt_blocks(tiny_llama: LoadedModel, make_engine: Any) -> None:
    prompt = random_tokens(100)  # 6 full blocks and a partial one of 4 tokens
    engine = make_engine(tiny_llama, kv_cache_bytes=8 << 20, block_size=BLOCK)
    computed = _prefill_tokens(engine)
    ids = [engine.submit(r) for r in fan_out(_request(prompt), 3)]
    while (
        not all(s.output_token_ids for s in engine.scheduler.running)
        or len(engine.scheduler.running) < 3
    ):
        engine.step()
    tables = [s.block_table for s in engine.scheduler.running]
    full = len(prompt) // BLOCK
    assert tables[0][:full] == tables[1][:full] == tables[2][:full]
    assert len({t[full] for t in tables}) == 3  # each its own last (partial) block
    assert engine.pool.num_in_use == full + 3
    outputs = run_to_end(engine, ids)
    # The prompt once, then each other choice only its last partial block (4 tokens).
    assert sum(computed) == len(prompt) + 2 * (len(prompt) - full * BLOCK)
    assert len({tuple(o) for o in outputs}) == 3  # seeds 11, 12, 13 differ
    alone = make_engine(tiny_llama, kv_cache_bytes=8 << 20, block_size=BLOCK)
    for j, tokens in enumerate(outputs):
        params = dataclasses.replace(SEEDED, seed=11 + j)
        assert alone.run([_request(prompt, params)])[0].token_ids == tokens


def test_choices_usage_reuse_is_physical(tiny_llama: LoadedModel, make_engine: Any) -> None:
    prompt = random_tokens(70, seed=3)
    engine = make_engine(tiny_llama, kv_cache_bytes=8 << 20, block_size=BLOCK)
    outs = engine.run(fan_out(_request(prompt), 4))
    assert [o.usage.reused_tokens for o in outs] == [0, 64, 64, 64]
    assert [o.usage.prompt_tokens for o in outs] == [70] * 4
    assert merged_usage([o.usage for o in outs]).completion_tokens == 32


def test_the_shown_digests_travel_on_the_wire() -> None:
    from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolDef

    output = OutputSpec(
        OutputKind.JSON_OBJECT, tools=(ToolDef("f"),), tools_shown="a1", format_shown="b2"
    )
    request = GenerationRequest([1, 2], SEEDED, request_id="r", output=output)
    sent = json.loads(json.dumps(request_to_json(request)))
    assert request_from_json(sent).output == output
    assert (output.tools_digest(), output.format_digest()) == ("a1", "b2")


def test_choice_travels_on_the_wire() -> None:
    params = SamplingParams(max_tokens=4, seed=3, stop=("x",), logit_bias=((5, -1.0),))
    request = fan_out(_request([1, 2, 3], params), 3)[2]
    sent = json.loads(json.dumps(request_to_json(request)))
    assert request_from_json(sent) == request and request_from_json(sent).choice == 2
    del sent["choice"]  # from a router of an earlier version: the first choice
    assert request_from_json(sent).choice == 0
