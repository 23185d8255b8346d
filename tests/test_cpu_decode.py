"""The C decode kernel against PyTorch's SDPA over gathered K/V: both dtypes, head groups
and sizes on its fast and generic paths, contexts across its 256-key chunks, scattered
blocks, strided queries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from promptcache.model.kernels import decode_attention

pytestmark = pytest.mark.skipif(decode_attention.library() is None, reason="no C compiler")


def _case(
    h: int, kv: int, hd: int, bs: int, ctx: list[int], dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(len(ctx) * 100 + hd + h)
    widths = [-(-c // bs) for c in ctx]
    blocks = sum(widths) + 3
    pool = torch.randn(2, kv, blocks, bs, hd, generator=g).to(dtype)
    ids = torch.randperm(blocks, generator=g).tolist()
    rows, used = [], 0
    for w in widths:  # scattered blocks, padded with block 0
        rows.append(ids[used : used + w] + [0] * (max(widths) - w))
        used += w
    tables = torch.tensor(rows, dtype=torch.int64)
    # queries as the model has them: a view into a wider (T, H + KV, hd) tensor
    q = torch.randn(len(ctx), h + kv, hd, generator=g).to(dtype)[:, :h]
    return q, pool[0], pool[1], tables, torch.tensor(ctx, dtype=torch.int64)


def _reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: torch.Tensor, ctx: torch.Tensor
) -> torch.Tensor:
    group = q.shape[1] // k.shape[0]
    out = []
    for i, c in enumerate(ctx.tolist()):
        keys = k[:, tables[i]].flatten(1, 2)[:, :c].float().repeat_interleave(group, 0)
        values = v[:, tables[i]].flatten(1, 2)[:, :c].float().repeat_interleave(group, 0)
        o = F.scaled_dot_product_attention(q[i].float()[:, None], keys, values)  # (H, 1, hd)
        out.append(o[:, 0])
    return torch.stack(out)


CASES = [
    # heads, kv heads, head size, block size, context lengths
    pytest.param(9, 3, 64, 16, [1, 37, 256, 257, 700], id="smollm-fast"),
    pytest.param(32, 8, 64, 16, [513, 3], id="llama-group4-fast"),
    pytest.param(4, 4, 64, 8, [100, 31], id="mha-block8-fast"),
    pytest.param(8, 1, 64, 16, [300], id="group8-generic"),
    pytest.param(4, 2, 32, 16, [90, 600], id="head32-generic"),
    pytest.param(4, 2, 128, 32, [1000, 1], id="head128-generic"),
]


@pytest.mark.parametrize("h,kv,hd,bs,ctx", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_sdpa(
    h: int, kv: int, hd: int, bs: int, ctx: list[int], dtype: torch.dtype
) -> None:
    q, k, v, tables, lens = _case(h, kv, hd, bs, ctx, dtype)
    assert q.stride(0) == (h + kv) * hd  # strided rows
    out = decode_attention.decode_attention(q, k, v, tables, lens)
    assert out.shape == q.shape and out.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), _reference(q, k, v, tables, lens), atol=tol, rtol=tol)


def test_limits() -> None:
    assert decode_attention.supports(torch.bfloat16, 9, 3, 64)
    assert not decode_attention.supports(torch.float16, 9, 3, 64)
    assert not decode_attention.supports(torch.float32, 64, 2, 64)  # 32 heads a group
    assert not decode_attention.supports(torch.float32, 4, 2, 512)


def test_loading_keeps_subnormals() -> None:
    """The library is built with -ffast-math but must not turn on flush-to-zero for the
    process (as linking crtfastmath.o would): subnormals survive in Python and PyTorch."""
    assert decode_attention.library() is not None
    tiny = 2.2250738585072014e-308  # the smallest normal double
    assert tiny / 4 != 0.0
    assert (torch.tensor([1e-39]) * 1.0).item() != 0.0  # a float32 subnormal
