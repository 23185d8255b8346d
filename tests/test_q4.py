"""4-bit weights (`--weights q4`): the GGUF's blocks read exactly, our C kernel and the
4-bit layers within float32's (bfloat16's) rounding of the dequantized weights, the whole
model's logits as close to float32 as dense bfloat16's (and, in float32, to the dense
float32 model's), and the fallback where no kernel can serve."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from promptcache.model.device import can_pack
from promptcache.model.errors import ModelLoadError
from promptcache.model.kernels import q4_matmul
from promptcache.model.layers.int4_linear import Int4Linear, dense_from_rows, int4_supported
from promptcache.model.layers.packed_linear import PackedLinear
from promptcache.model.loading import loader
from promptcache.model.loading.bundled import bundled_gguf_path
from promptcache.model.loading.gguf_q4 import decode_blocks, read_q4
from promptcache.model.loading.loader import LoadedModel, load_model, resolve_model_path
from promptcache.model.loading.weights import read_checkpoint, to_our_names
from promptcache.model.quant import Q4Tensor

CPU = torch.device("cpu")
NO_INT4 = int4_supported(CPU, torch.bfloat16)
needs_int4 = pytest.mark.skipif(NO_INT4 is not None, reason=str(NO_INT4))
needs_kernel = pytest.mark.skipif(q4_matmul.library() is None, reason="no C compiler")
BF16_ROWS = dense_from_rows(torch.bfloat16)


def _prompt(n: int, seed: int) -> list[int]:
    """Seeded ordinary token ids of the bundled model's vocabulary."""
    return torch.randint(100, 40000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _block(d: float, m: float | None, codes: list[int]) -> np.ndarray:
    head = np.array([d] + ([] if m is None else [m]), dtype=np.float16).view(np.uint8)
    low, high = np.array(codes[:16], np.uint8), np.array(codes[16:], np.uint8)
    return np.concatenate([head, low | (high << 4)])


def test_blocks_decode_to_gguf_values_nibble_order_included() -> None:
    codes = [(7 * i + 3) % 16 for i in range(32)]
    q41 = decode_blocks(_block(0.5, -2.0, codes)[None, :], with_min=True)
    assert q41.codes[0].tolist() == codes  # low nibbles are codes 0..15, high ones 16..31
    assert q41.dequantize()[0].tolist() == [0.5 * c - 2.0 for c in codes]
    q40 = decode_blocks(_block(0.25, None, codes)[None, :], with_min=False)
    assert q40.dequantize()[0].tolist() == [0.25 * (c - 8) for c in codes]


def test_bundled_q4_blocks_equal_the_dequantized_conversion_bit_for_bit() -> None:
    q4 = read_q4(bundled_gguf_path(), num_heads=9, num_kv_heads=3)
    dense = to_our_names(read_checkpoint(resolve_model_path(None)), tied=True)
    assert len(q4) == 30 * 4  # qkv, o, gate_up, down in each of 30 layers
    for name, q in q4.items():
        assert torch.equal(q.dequantize(), dense[name + ".weight"]), name


def _random_q4(n: int, k: int, seed: int) -> Q4Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    scale = torch.rand(n, k // 32, generator=g) * 0.02
    low = -torch.rand(n, k // 32, generator=g) * 0.15
    return Q4Tensor(codes, scale, low)


@needs_kernel
@pytest.mark.parametrize("n", [16, 40, 960])  # whole tiles, a part tile, a projection
@pytest.mark.parametrize("rows", [1, 5, 8, 13, 47])  # groups of 8 and 4 rows, and their rests
def test_c_kernel_is_the_dequantized_product_within_float32_rounding(n: int, rows: int) -> None:
    k = 576 if n == 960 else 64
    q = _random_q4(n, k, seed=n + rows)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows))
    exact = x.double() @ q.dequantize().double().t()
    got = q4_matmul.matmul(x, q4_matmul.pack(q))
    assert got.dtype == torch.float32 and got.shape == (rows, n)
    assert (got.double() - exact).abs().max() <= 1e-6 * k * exact.abs().max()
    xb = x.bfloat16()  # bfloat16 rows: exact products, float32 sums, y rounded to bfloat16
    exact_b = xb.double() @ q.dequantize().double().t()
    got_b = q4_matmul.matmul(xb, q4_matmul.pack(q))
    assert got_b.dtype == torch.bfloat16
    assert ((got_b.double() - exact_b).abs() <= exact_b.abs() * 2**-8 + 1e-5 * k).all()


@needs_kernel
def test_c_kernel_reads_strided_rows_and_refuses_bad_shapes() -> None:
    q = _random_q4(32, 64, seed=3)
    wide = torch.randn(4, 128)
    x = wide[:, 32:96]  # rows 128 apart
    assert torch.allclose(
        q4_matmul.matmul(x, q4_matmul.pack(q)), x @ q.dequantize().t(), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="4-bit matmul"):
        q4_matmul.matmul(torch.randn(4, 96), q4_matmul.pack(q))  # K 96 is not the weight's 64


@needs_int4
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 3, 8, BF16_ROWS - 1, BF16_ROWS, 100])
def test_int4_layer_is_the_dequantized_product_within_its_rounding(
    rows: int, dtype: torch.dtype
) -> None:
    q = _random_q4(192, 576, seed=rows)
    weight = q.dequantize()
    bias = torch.randn(192)
    dense: torch.nn.Module = torch.nn.Linear(576, 192)
    if dtype == torch.bfloat16 and can_pack(CPU, dtype):
        dense = PackedLinear(weight.bfloat16(), bias.bfloat16())
    elif dtype == torch.bfloat16:  # no native bfloat16 in oneDNN (AVX2): a plain layer
        dense = torch.nn.Linear(576, 192, dtype=dtype)
        dense.weight.data, dense.bias.data = weight.bfloat16(), bias.bfloat16()
    else:
        dense.weight.data, dense.bias.data = weight, bias
    layer = Int4Linear(q, bias, dtype, dense=dense)
    x = torch.randn(rows, 576).to(dtype)
    exact = x.float() @ weight.t() + bias.to(dtype).float()
    got, dense_got = layer(x).float(), dense(x).float()
    scale = exact.abs().max()
    # bfloat16 keeps 8 bits: inputs and outputs rounded to 2^-8 of their size
    bound = 2**-6 if dtype == torch.bfloat16 else 1e-5
    assert (got - exact).abs().max() / scale < bound
    assert (dense_got - exact).abs().max() / scale < bound


@pytest.fixture(scope="module")
def q4_model() -> LoadedModel:
    return load_model(None, dtype=torch.bfloat16, weights="q4")


@pytest.mark.slow
@needs_int4
def test_q4_model_logits_are_as_close_to_float32_as_dense_bfloat16(
    q4_model: LoadedModel, bundled: LoadedModel, make_engine: Any
) -> None:
    dense = load_model(None, dtype=torch.bfloat16)
    assert q4_model.weights == "q4" and dense.weights == "dense"
    assert q4_model.fingerprint != dense.fingerprint  # their KV differs: never shared
    prompt = _prompt(96, seed=4)
    # chunks of 8 rows: every projection runs the int4 kernel
    logits = {
        name: make_engine(m, kv_cache_bytes=16 << 20).prompt_logits(prompt, chunk_size=8)
        for name, m in (("q4", q4_model), ("bf16", dense), ("fp32", bundled))
    }
    ref = logits["fp32"]
    q4_err = (logits["q4"] - ref).abs().max().item()
    bf16_err = (logits["bf16"] - ref).abs().max().item()
    assert q4_err <= 1.5 * bf16_err, (q4_err, bf16_err)
    agree = (logits["q4"].argmax(-1) == ref.argmax(-1)).float().mean().item()
    dense_agree = (logits["bf16"].argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agree >= dense_agree - 0.05, (agree, dense_agree)


@needs_int4
def test_q4_model_generates_greedily(q4_model: LoadedModel, make_engine: Any) -> None:
    from promptcache.engine.sampling_params import SamplingParams

    engine = make_engine(q4_model, kv_cache_bytes=32 << 20)
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    [out] = engine.generate(["The capital of France is"], params)
    assert len(out.token_ids) == 12 and "Paris" in out.text


@pytest.mark.slow
@needs_kernel
def test_q4_float32_model_logits_equal_the_dense_float32_models(
    bundled: LoadedModel, make_engine: Any
) -> None:
    q4 = load_model(None, dtype=torch.float32, weights="q4")
    assert q4.weights == "q4" and q4.fingerprint != bundled.fingerprint
    prompt = _prompt(96, seed=4)
    # chunks of 8 rows: every projection runs the 4-bit kernel, on the very weights the
    # dense model holds (test above: bit for bit), so only float32 sums differ
    got, ref = (
        make_engine(m, kv_cache_bytes=16 << 20).prompt_logits(prompt, chunk_size=8)
        for m in (q4, bundled)
    )
    assert (got - ref).abs().max().item() <= 1e-3
    assert torch.equal(got.argmax(-1), ref.argmax(-1))


def test_q4_falls_back_to_dense_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = load_model(None, dtype=torch.float16, weights="q4")
    assert model.weights == "dense"
    assert "serving dense float16 weights instead of 4-bit" in caplog.text
    assert "need dtype float32 or bfloat16" in caplog.text


def test_q4_needs_a_gguf_model(tiny_llama_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"needs a \.gguf model"):
        load_model(str(tiny_llama_dir), weights="q4")
    with pytest.raises(ValueError, match="unknown weights"):
        load_model(None, weights="q8")


def test_a_misfit_4bit_weight_leaves_the_model_all_dense(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every 4-bit weight is checked before the network is built: one that does not fit
    leaves the whole model dense (with a warning), none of it 4-bit."""
    if (why := int4_supported(torch.device("cpu"), torch.bfloat16)) is not None:
        pytest.skip(why)
    fits = _random_q4(576, 576, seed=1)  # o_proj: 576 -> 576
    misfit = _random_q4(576, 96, seed=2)  # down_proj is 1536 -> 576
    weights = {"layers.0.self_attn.o_proj": fits, "layers.0.mlp.down_proj": misfit}
    monkeypatch.setattr(loader, "read_q4", lambda *_: weights)
    with caplog.at_level(logging.WARNING):
        model = load_model(None, dtype=torch.bfloat16, weights="q4")
    assert model.weights == "dense" and not model.module.kernels.int4
    assert not any(isinstance(m, Int4Linear) for m in model.module.modules())
    assert "layers.0.mlp.down_proj: 4-bit weight (576, 96) does not fit" in caplog.text
