"""The LM head from a GGUF's 8-bit embeddings (`--weights q4`, `model.kernels.q8_matmul`,
`model.layers.q8_head`): Q8_0 blocks read exactly, our C kernel within its documented
rounding of the dequantized product (float32 rows: float32's; bfloat16 rows: 16-bit
integers per block of 32), many rows handed to the dense head, and the bundled model's
head served so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from promptcache.model.errors import ModelLoadError
from promptcache.model.kernels import q8_matmul
from promptcache.model.layers.q8_head import Q8Head
from promptcache.model.loading.bundled import bundled_gguf_path
from promptcache.model.loading.gguf_q8 import decode_q8_0, read_q8_head
from promptcache.model.loading.loader import load_model
from promptcache.model.quant import Q8Tensor

needs_kernel = pytest.mark.skipif(q8_matmul.library() is None, reason="no C compiler")


def _q8(n: int, k: int, seed: int) -> Q8Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    return Q8Tensor(codes, torch.rand(n, k // 32, generator=g) * 0.01)


def test_blocks_decode_to_gguf_values() -> None:
    codes = list(range(-16, 16))
    block = np.concatenate(
        [np.array([0.5], np.float16).view(np.uint8), np.array(codes, np.int8).view(np.uint8)]
    )
    q = decode_q8_0(np.stack([block, block]))
    assert q.shape == (2, 32) and q.codes.dtype == torch.int8
    assert q.dequantize()[1].tolist() == [0.5 * c for c in codes]


@pytest.mark.slow
def test_bundled_head_equals_the_dequantized_embeddings() -> None:
    q = read_q8_head(bundled_gguf_path(), tied=True)
    model = load_model(None, dtype=torch.float32)
    assert torch.equal(q.dequantize(), model.module.embed_tokens.weight)
    with pytest.raises(ModelLoadError, match=r"no output\.weight"):
        read_q8_head(bundled_gguf_path(), tied=False)


@needs_kernel
@pytest.mark.parametrize("rows", [1, 3, 8, 9, 17])
@pytest.mark.parametrize("n", [40, 64])  # 40: the last tile padded
def test_kernel_is_the_dequantized_product_within_its_rounding(rows: int, n: int) -> None:
    q, k = _q8(n, 96, seed=rows), 96
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(n)) * 3
    x[0, 5] = 40.0  # an outlier: only its own block's integers get coarser
    w = q.dequantize().double()
    exact = x.double() @ w.t()
    got = q8_matmul.matmul(x, q8_matmul.pack(q))
    assert got.dtype == torch.float32 and got.shape == (rows, n)
    assert (got.double() - exact).abs().max() <= 1e-6 * exact.abs().max()
    xb = x.bfloat16()
    exact_b = xb.double() @ w.t()
    got_b = q8_matmul.matmul(xb, q8_matmul.pack(q)).double()
    # 16-bit integers per block: each x off by at most half a step of max|block| / 32767
    step = xb.float().abs().view(rows, k // 32, 32).amax(-1) / 32767
    bound = 0.5 * (step.double() @ w.view(n, k // 32, 32).abs().sum(-1).t())
    assert ((got_b - exact_b).abs() <= bound * 1.01 + 1e-6).all()


@needs_kernel
def test_kernel_reads_strided_rows_and_refuses_bad_shapes() -> None:
    q = _q8(32, 64, seed=1)
    wide = torch.randn(4, 100)
    x = wide[:, :64]  # rows 100 apart
    got = q8_matmul.matmul(x, q8_matmul.pack(q))
    assert torch.allclose(got, x @ q.dequantize().t(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="8-bit matmul"):
        q8_matmul.matmul(torch.randn(2, 32), q8_matmul.pack(q))
    with pytest.raises(ValueError, match="8-bit matmul"):
        q8_matmul.matmul(torch.randn(2, 64).half(), q8_matmul.pack(q))


@needs_kernel
def test_head_hands_many_rows_to_the_dense_head() -> None:
    q = _q8(48, 64, seed=2)
    dense = torch.nn.Linear(64, 48, bias=False)
    dense.weight.data = q.dequantize()
    head = Q8Head(q, dense)
    few = torch.randn(q8_matmul.dense_from_rows() - 1, 64)
    many = torch.randn(q8_matmul.dense_from_rows(), 64)
    assert torch.allclose(head(few), dense(few), atol=1e-5)
    assert torch.equal(head(many), dense(many))


@pytest.mark.slow
@needs_kernel
def test_q4_model_serves_its_head_from_the_8bit_embeddings() -> None:
    model = load_model(None, dtype=torch.float32, weights="q4")
    head = model.module.lm_head
    assert model.weights == "q4" and isinstance(head, Q8Head)
    hidden = torch.randn(4, model.spec.hidden_size)
    ref = hidden @ model.module.embed_tokens.weight.t()
    assert (model.module.compute_logits(hidden) - ref).abs().max() <= 1e-5 * ref.abs().max()
