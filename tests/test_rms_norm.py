"""Our RMSNorm gives transformers' bits (LlamaRMSNorm) in float32 and bfloat16, at decode
and prefill sizes, including the shorter forms it takes on CPU."""

from __future__ import annotations

import pytest
import torch

from promptcache.model.layers.norm import RMSNorm


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 8, 33, 512])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
def test_rms_norm_equals_transformers_bit_for_bit(
    dtype: torch.dtype, rows: int, scale: float
) -> None:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(rows)
    weight = (torch.rand(576, generator=g) + 0.5).to(dtype)
    x = (torch.randn(rows, 576, generator=g) * scale).to(dtype)
    ours = RMSNorm(576, 1e-5).to(dtype)
    ref = LlamaRMSNorm(576, eps=1e-5).to(dtype)
    ours.weight.data.copy_(weight)
    ref.weight.data.copy_(weight)
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert got.dtype == want.dtype == dtype
    assert torch.equal(got, want)
