"""The decode step in one C call (`engine.cpu_step`) gives the module-by-module forward's
bits: every decode-only step of a 4-bit model computed both ways, in both dtypes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.layers.int4_linear import int4_supported
from promptcache.model.loading.loader import load_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_decode_step_gives_the_module_forwards_bits(dtype: torch.dtype, make_engine: Any) -> None:
    if (why := int4_supported(torch.device("cpu"), dtype)) is not None:
        pytest.skip(why)
    model = load_model(None, dtype=dtype, weights="q4")
    engine = make_engine(model, kv_cache_bytes=32 << 20)
    runner, step = engine.runner, engine.runner.cpu_step
    if step is None:
        pytest.skip("the decode step's kernel could not be built")
    forward, compared = runner.forward, []

    def both_ways(inputs: Any) -> torch.Tensor:
        if not step.serves(inputs):
            return forward(inputs)
        runner.cpu_step = None  # the modules first: they write the same K/V
        want = forward(inputs)
        runner.cpu_step = step
        got = forward(inputs)
        compared.append((len(inputs.input_ids), torch.equal(got, want)))
        return got

    runner.forward = both_ways  # type: ignore[method-assign]
    prompts = ["The capital of France is", "Prompt caching keeps " * 9, "1, 2, 3,"]
    params = SamplingParams(max_tokens=7, temperature=0, ignore_eos=True)
    outs = engine.generate(prompts, params)
    assert [len(o.token_ids) for o in outs] == [7, 7, 7]
    assert {rows for rows, _ in compared} == {3}  # the batch's six decode-only steps
    assert len(compared) == 6 and all(same for _, same in compared)
    assert "Paris" in outs[0].text
