"""The batched-matmul attention paths (used on CPU in bfloat16) equal PyTorch's SDPA.

They are dtype-generic, so float32 checks them tightly; the engine picks them only for
bf16/fp16 on CPU (bf16 only where it is native), where the float32 parity tests would not
reach them. RMSNorm gives transformers' bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from promptcache.model.attention.metadata import PrefillSlice
from promptcache.model.attention.paged import (
    GROUPED_PREFILL_MAX_SCORES,
    _grouped_prefill_fits,
    causal_mask,
    decode_mask,
    grouped_decode_attention,
    grouped_prefill_attention,
    split_prefill_attention,
)
from promptcache.model.device import can_pack

H, KV, HD = 6, 2, 16


def _reference(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    # q (B, H, L, hd), keys (B, KV, S, hd); no mask = plain causal
    return F.scaled_dot_product_attention(
        q, keys, values, attn_mask=mask, is_causal=mask is None, enable_gqa=True
    )


def test_grouped_prefill_equals_sdpa_with_a_causal_mask() -> None:
    g = torch.Generator().manual_seed(0)
    for q_len, ctx, pad in ((1, 1, 0), (5, 5, 3), (7, 40, 8), (16, 33, 15)):
        q = torch.randn(q_len, H, HD, generator=g)
        keys = torch.randn(KV, ctx + pad, HD, generator=g)  # padding slots: not attended
        values = torch.randn(KV, ctx + pad, HD, generator=g)
        mask = causal_mask(q_len, ctx, None, torch.device("cpu"))
        ref = _reference(q.transpose(0, 1)[None], keys[None, :, :ctx], values[None, :, :ctx], mask)
        got = grouped_prefill_attention(q, keys, values, ctx)
        torch.testing.assert_close(got, ref[0].transpose(0, 1), rtol=1e-5, atol=1e-5)


def test_grouped_decode_equals_sdpa_with_padding() -> None:
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([3, 17, 32])
    width = 32
    q = torch.randn(3, H, HD, generator=g)
    keys = torch.randn(KV, 3, width, HD, generator=g)
    values = torch.randn(KV, 3, width, HD, generator=g)
    mask = decode_mask(lens, width, None)
    ref = _reference(q[:, :, None], keys.transpose(0, 1), values.transpose(0, 1), mask)
    got = grouped_decode_attention(q, keys, values, ~mask)
    torch.testing.assert_close(got, ref[:, :, 0], rtol=1e-5, atol=1e-5)


def test_grouped_prefill_is_chosen_for_short_16bit_chunks_without_a_window() -> None:
    bf16 = torch.zeros(1, 9, 64, dtype=torch.bfloat16)
    half = bf16.half()
    short = PrefillSlice(0, 26, 4650, torch.zeros(1), None)
    # bfloat16 only where the CPU computes it natively; emulated (AVX2) it takes flash
    assert _grouped_prefill_fits(bf16, short, None) == can_pack(torch.device("cpu"), bf16.dtype)
    assert _grouped_prefill_fits(half, short, None)
    assert not _grouped_prefill_fits(half, short, 4096)  # sliding window: masked flash
    assert not _grouped_prefill_fits(bf16.float(), short, None)  # float32: flash
    big = PrefillSlice(0, 1024, GROUPED_PREFILL_MAX_SCORES // 1024, torch.zeros(1), None)
    assert not _grouped_prefill_fits(half, big, None)


def test_rms_norm_gives_transformers_bits() -> None:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from promptcache.model.layers.norm import RMSNorm

    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.bfloat16):
        ours, theirs = RMSNorm(576, 1e-5), LlamaRMSNorm(576, eps=1e-5)
        weight = torch.rand(576, generator=g) + 0.5
        ours.weight.data.copy_(weight)
        theirs.weight.data.copy_(weight)
        ours, theirs = ours.to(dtype), theirs.to(dtype)
        for rows in (1, 7, 300):
            x = (torch.randn(rows, 576, generator=g) * 3).to(dtype)
            assert torch.equal(ours(x), theirs(x)), (dtype, rows)


def test_rotation_gives_transformers_bits_for_q_and_k_in_one_pass() -> None:
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from promptcache.model.layers.rotary import RotaryEmbedding, rotate

    g = torch.Generator().manual_seed(3)
    hd, h, kv, t = 64, 9, 3, 7
    inv_freq = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
    rope = RotaryEmbedding(inv_freq, 1.0, 64)
    positions = torch.tensor([0, 1, 5, 17, 30, 31, 63])
    emb = torch.cat([positions[:, None].float() * inv_freq[None, :]] * 2, dim=-1)
    for dtype in (torch.float32, torch.bfloat16):
        qk = torch.randn(t, h + kv, hd, generator=g).to(dtype)
        cos, sin = emb.cos().to(dtype)[None], emb.sin().to(dtype)[None]  # as transformers'
        heads_first = qk.transpose(0, 1)[None]  # (1, H + KV, T, hd)
        q_ref, k_ref = apply_rotary_pos_emb(heads_first[:, :h], heads_first[:, h:], cos, sin)
        out = rotate(qk, rope.lookup(positions, dtype))
        assert torch.equal(out[:, :h], q_ref[0].transpose(0, 1)), dtype
        assert torch.equal(out[:, h:], k_ref[0].transpose(0, 1)), dtype


def test_matmul_paths_only_where_bfloat16_is_native() -> None:
    import os
    import subprocess
    import sys

    from promptcache.model.attention.paged import matmul_paths
    from promptcache.model.device import can_pack

    bf16 = torch.zeros(0, dtype=torch.bfloat16)
    assert matmul_paths(bf16) == can_pack(torch.device("cpu"), torch.bfloat16)
    assert not matmul_paths(bf16.float())
    # oneDNN limited to AVX2 (as on a CPU without AVX512-BF16): PyTorch's kernels instead
    probe = "import torch; from promptcache.model.attention.paged import matmul_paths; "
    probe += "print(matmul_paths(torch.zeros(0, dtype=torch.bfloat16)))"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.split()[-1] == "False", out.stderr[-500:]


def test_split_prefill_equals_sdpa_with_a_causal_mask() -> None:
    g = torch.Generator().manual_seed(4)
    for q_len, ctx in ((1, 9), (7, 40), (33, 34), (64, 200)):
        q = torch.randn(q_len, H, HD, generator=g)
        keys = torch.randn(KV, ctx, HD, generator=g)
        values = torch.randn(KV, ctx, HD, generator=g)
        mask = causal_mask(q_len, ctx, None, torch.device("cpu"))
        ref = _reference(q.transpose(0, 1)[None], keys[None], values[None], mask)
        got = split_prefill_attention(q, keys, values)
        torch.testing.assert_close(got, ref[0].transpose(0, 1), rtol=1e-5, atol=1e-5)


def test_only_long_chunks_without_a_window_split() -> None:
    from promptcache.model.attention.paged import SPLIT_MIN_QUERIES, _splits

    q = torch.zeros(1, 9, 64)
    assert _splits(q, SPLIT_MIN_QUERIES, None)
    assert not _splits(q, SPLIT_MIN_QUERIES - 1, None)  # the masked kernel is faster
    assert not _splits(q, SPLIT_MIN_QUERIES, 4096)  # a sliding window needs the mask
