"""The C layer steps (`model.kernels.layer_ops`) against PyTorch's ops they replace: the rotary
embedding with the K/V write bit for bit in both dtypes, the residual add and RMS norm and
SiLU(gate) * up in bfloat16 within one rounding; and a bfloat16 model with them against
the same model without."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from promptcache.model.attention.paged import write_kv
from promptcache.model.kernels import layer_ops
from promptcache.model.layers.norm import RMSNorm
from promptcache.model.layers.rotary import RotaryEmbedding, rotate
from promptcache.model.loading.loader import load_model
from tests.helpers import save_tiny_model

pytestmark = pytest.mark.skipif(layer_ops.library() is None, reason="no C compiler")

BF16 = torch.bfloat16


def _ulps(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """How many bfloat16 steps apart each pair is (same sign assumed where nonzero)."""
    return (got.view(torch.int16).int() - want.view(torch.int16).int()).abs()


@pytest.mark.parametrize("rows", [1, 8, 33, 300])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 300.0])
@pytest.mark.parametrize("with_h", [True, False])
def test_add_rms_norm_is_the_add_then_our_norm(rows: int, scale: float, with_h: bool) -> None:
    g = torch.Generator().manual_seed(rows)
    x = (torch.randn(rows, 576, generator=g) * scale).to(BF16)
    h = (torch.randn(rows, 576, generator=g) * scale).to(BF16) if with_h else None
    norm = RMSNorm(576, 1e-5).to(BF16)
    norm.weight.data.copy_(torch.rand(576, generator=g) + 0.5)
    with torch.no_grad():
        stream = x + h if h is not None else x.clone()
        want = norm(stream)
        got = layer_ops.add_rms_norm(x, h, norm.weight, norm.eps)
    assert torch.equal(x, stream)  # the add, in place, exactly
    diff = _ulps(got, want)
    # one step at most, in under 1% of elements: the sum of squares taken in another
    # order (8 lanes on AVX2, 16 on AVX512) moves a few results across a rounding edge
    assert diff.max().item() <= 1 and diff.float().mean().item() < 1e-2


@pytest.mark.parametrize("rows", [1, 8, 64])
def test_silu_mul_within_two_roundings(rows: int) -> None:
    g = torch.Generator().manual_seed(rows)
    gate_up = (torch.randn(rows, 2 * 1536, generator=g) * 4).to(BF16)
    gate, up = gate_up.split(1536, dim=-1)
    want = F.silu(gate) * up
    got = layer_ops.silu_mul(gate_up, 1536)
    near_zero = want.abs() < 1e-30  # subnormal-free bfloat16 steps near 0 count alike
    diff = torch.where(near_zero, 0, _ulps(got, want))
    # silu(gate) one step off at most, then the product's own rounding: two steps
    assert diff.max().item() <= 2 and diff.float().mean().item() < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("rows", [1, 8, 300])
def test_rope_kv_gives_pytorchs_bits(dtype: torch.dtype, rows: int) -> None:
    h, kv, hd, blocks, bs = 9, 3, 64, 40, 16
    g = torch.Generator().manual_seed(rows)
    inv_freq = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
    rope = RotaryEmbedding(inv_freq, 1.0, 4096)
    cos_sin = rope.lookup(torch.randint(0, 4096, (rows,), generator=g), dtype)
    qkv = torch.randn(rows, (h + 2 * kv) * hd, generator=g).to(dtype)
    slots = torch.randperm(blocks * bs, generator=g)[:rows]
    pools = [torch.randn(kv, blocks, bs, hd, generator=g).to(dtype) for _ in range(2)]
    pools += [p.clone() for p in pools]
    qk = rotate(qkv[:, : (h + kv) * hd].view(rows, h + kv, hd), cos_sin)
    write_kv(qk[:, h:], qkv[:, (h + kv) * hd :].view(rows, kv, hd), pools[0], pools[1], slots)
    got = qkv.clone()
    layer_ops.rope_kv(got, (h, kv, hd), cos_sin, pools[2], pools[3], slots)
    assert torch.equal(got[:, : (h + kv) * hd], qk.reshape(rows, -1))
    assert torch.equal(got[:, (h + kv) * hd :], qkv[:, (h + kv) * hd :])  # v as it was
    assert torch.equal(pools[2], pools[0]) and torch.equal(pools[3], pools[1])


def test_rope_kv_refuses_a_slot_outside_the_pool_and_writes_nothing() -> None:
    k, v = torch.zeros(3, 4, 16, 64), torch.zeros(3, 4, 16, 64)
    cos_sin = (torch.ones(2, 1, 64), torch.zeros(2, 1, 64))
    for bad in (64, -1):
        slots = torch.tensor([0, bad])
        with pytest.raises(IndexError, match="outside the KV pool"):
            layer_ops.rope_kv(torch.ones(2, 15 * 64), (9, 3, 64), cos_sin, k, v, slots)
    assert not k.any() and not v.any()


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_bfloat16_model_with_and_without_layer_ops(
    arch: str, tmp_path: Path, make_engine: Any
) -> None:
    save_tiny_model(tmp_path, arch, seed=3)
    model = load_model(str(tmp_path), dtype=BF16)
    flags = {
        (id(m), name): getattr(m, name)
        for m in model.module.modules()
        for name in ("fused", "fused_rope")
        if hasattr(m, name)
    }
    assert any(flags.values())  # on where the kernel builds (this test's condition)
    qk_norm = arch == "qwen3"
    assert all(not on for (_, name), on in flags.items() if name == "fused_rope") == qk_norm
    ids = torch.randint(0, 256, (45,), generator=torch.Generator().manual_seed(4)).tolist()
    engine = make_engine(model, block_size=4, kv_cache_bytes=1 << 20)
    fused = engine.prompt_logits(ids, chunk_size=9)
    for m in model.module.modules():
        for name in ("fused", "fused_rope"):
            if hasattr(m, name):
                setattr(m, name, False)
    plain = engine.prompt_logits(ids, chunk_size=9)
    scale = plain.abs().max().item()
    assert (fused - plain).abs().max().item() <= 0.02 * scale
    assert torch.equal(fused.argmax(-1), plain.argmax(-1))


@pytest.mark.parametrize("rows", [1, 8, 300])
def test_float32_norm_and_silu_within_float32_rounding(rows: int) -> None:
    """The float32 forms (4-bit models): the add exact, the rest within float32's
    rounding of PyTorch's."""
    g = torch.Generator().manual_seed(rows)
    x, h = torch.randn(rows, 576, generator=g) * 3, torch.randn(rows, 576, generator=g)
    norm = RMSNorm(576, 1e-5)
    norm.weight.data.copy_(torch.rand(576, generator=g) + 0.5)
    with torch.no_grad():
        stream = x + h
        want = norm(stream)
        got = layer_ops.add_rms_norm(x, h, norm.weight, norm.eps)
    assert torch.equal(x, stream)
    # within 7 float32 steps (2^-23 each): the sum of squares in another order, rsqrt, two
    # products
    torch.testing.assert_close(got, want, rtol=8e-7, atol=0)
    gate_up = torch.randn(rows, 2 * 1536, generator=g) * 4
    gate, up = gate_up.split(1536, dim=-1)
    torch.testing.assert_close(
        layer_ops.silu_mul(gate_up, 1536), F.silu(gate) * up, rtol=1e-6, atol=1e-30
    )
