"""Float32 linears for few rows by our C kernel (`model/cpu_f32.py`): the product with
float32 sums in another order, any shape (a part block of outputs, K not a multiple of 8),
strided rows, bias; F.linear itself from MAX_ROWS rows; the float32 model served by it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from promptcache.model import cpu_f32
from promptcache.model.loader import LoadedModel

pytestmark = pytest.mark.skipif(cpu_f32.library() is None, reason="no C compiler")


@pytest.mark.parametrize("n,k", [(4, 8), (13, 20), (960, 576), (577, 1537)])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 15])
def test_kernel_is_the_product_within_float32_rounding(n: int, k: int, rows: int) -> None:
    g = torch.Generator().manual_seed(n * 100 + rows)
    w, b = torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    x = torch.randn(rows, k, generator=g)
    exact = x.double() @ w.double().t() + b.double()
    got = cpu_f32.matmul(x, w, b)
    assert got.shape == (rows, n) and got.dtype == torch.float32
    assert (got.double() - exact).abs().max() <= 1e-6 * k * exact.abs().max()
    no_bias = cpu_f32.matmul(x, w, None)
    assert torch.allclose(no_bias + b, got, rtol=1e-6, atol=1e-5)


def test_kernel_reads_strided_rows_and_refuses_bad_shapes() -> None:
    w = torch.randn(8, 16)
    wide = torch.randn(3, 40)
    x = wide[:, 8:24]  # rows 40 apart
    assert torch.allclose(cpu_f32.matmul(x, w, None), x @ w.t(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="float32 matmul"):
        cpu_f32.matmul(torch.randn(2, 12), w, None)
    with pytest.raises(ValueError, match="float32 matmul"):
        cpu_f32.matmul(torch.randn(2, 16).double(), w, None)


def test_linear_takes_the_kernel_below_max_rows_and_f_linear_from_there() -> None:
    w, b = torch.randn(96, 64), torch.randn(96)
    layer = cpu_f32.F32Linear(w, b)
    many = torch.randn(cpu_f32.MAX_ROWS, 64)
    assert torch.equal(layer(many), F.linear(many, w, b))  # the very same call
    few = many[: cpu_f32.MAX_ROWS - 1]
    assert torch.allclose(layer(few), F.linear(few, w, b), rtol=1e-5, atol=1e-5)


def test_the_float32_model_is_served_by_it_without_copies(bundled: LoadedModel) -> None:
    module = bundled.module
    layer = module.layers[0]
    for linear in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.down_proj):
        assert isinstance(linear, cpu_f32.F32Linear)
    assert isinstance(module.lm_head, cpu_f32.F32Linear)
    # the tied head reads the embeddings where they lie
    assert module.lm_head.weight.data_ptr() == module.embed_tokens.weight.data_ptr()
