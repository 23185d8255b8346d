"""The Triton paged-attention kernel against PyTorch's SDPA over gathered K/V: decode rows,
prefill chunks over cached context (several in one launch), GQA groups, a sliding window,
padding rows. On a GPU it runs compiled; elsewhere through Triton's interpreter."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from promptcache.model.attention import paged_tables as pt
from promptcache.model.attention import selector

if importlib.util.find_spec("triton") is None:
    pytest.skip("needs Triton", allow_module_level=True)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
HD = 32


@pytest.fixture(scope="module")
def ta(triton_interpreter: ModuleType) -> ModuleType:
    """The kernel's module; off CUDA it runs through Triton's interpreter, on only while
    this module's tests run."""
    return triton_interpreter


def _pool(
    kv: int, blocks: int, dtype: torch.dtype, seed: int, bs: int = 16
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(2, kv, blocks, bs, HD, generator=g).to(dtype)
    return data[0].to(DEVICE), data[1].to(DEVICE)


def _tables(
    ctx: list[int], qlens: list[int], blocks: int, block_q: int, seed: int, bs: int = 16
) -> tuple[pt.PagedTables, list[list[int]]]:
    """Each sequence gets distinct blocks in shuffled order."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(blocks, generator=g).tolist()
    tables, used = [], 0
    for c in ctx:
        n = -(-c // bs)
        tables.append(ids[used : used + n])
        used += n
    starts = [sum(qlens[:i]) for i in range(len(qlens))]
    return pt.build_tables(tables, ctx, starts, qlens, block_q, DEVICE), tables


def _reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    tables: list[list[int]],
    ctx: list[int],
    qlens: list[int],
    window: int | None,
) -> torch.Tensor:
    out = torch.zeros_like(q, dtype=torch.float32)
    bs = k_cache.shape[2]
    row = 0
    for table, c, n in zip(tables, ctx, qlens, strict=True):
        ids = torch.tensor(table[: -(-c // bs)], device=DEVICE)
        keys = k_cache[:, ids].reshape(k_cache.shape[0], -1, HD)[:, :c].float()
        values = v_cache[:, ids].reshape(v_cache.shape[0], -1, HD)[:, :c].float()
        q_pos = torch.arange(c - n, c, device=DEVICE)[:, None]
        k_pos = torch.arange(c, device=DEVICE)[None, :]
        mask = k_pos <= q_pos
        if window is not None:
            mask &= q_pos - k_pos < window
        o = F.scaled_dot_product_attention(
            q[row : row + n].float().transpose(0, 1)[None],
            keys[None],
            values[None],
            attn_mask=mask,
            enable_gqa=True,
        )
        out[row : row + n] = o[0].transpose(0, 1)
        row += n
    return out


CASES = [
    # (heads, kv heads, context lengths, query lengths, window)
    pytest.param(4, 2, [37, 1, 100, 16], [1, 1, 1, 1], None, id="decode"),
    pytest.param(6, 2, [40, 90, 33], [40, 25, 17], None, id="prefill-over-cache"),
    pytest.param(4, 4, [70, 64], [3, 64], None, id="mha"),
    pytest.param(4, 1, [80, 50], [20, 1], 24, id="window"),
]


@pytest.mark.slow
@pytest.mark.parametrize("h,kv,ctx,qlens,window", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bs", [16, 8, 128])  # a key tile spans blocks, or part of one
def test_matches_sdpa(
    h: int,
    kv: int,
    ctx: list[int],
    qlens: list[int],
    window: int | None,
    dtype: torch.dtype,
    bs: int,
    ta: ModuleType,
) -> None:
    blocks = 32
    k_cache, v_cache = _pool(kv, blocks, dtype, seed=1, bs=bs)
    block_q = 1 if all(n == 1 for n in qlens) else pt.PREFILL_BLOCK_Q
    tables, lists = _tables(ctx, qlens, blocks, block_q, seed=2, bs=bs)
    q = torch.randn(sum(qlens), h, HD, generator=torch.Generator().manual_seed(3)).to(dtype)
    q = q.to(DEVICE)
    out = torch.full_like(q, 7.0)
    ta.paged_attention(q, k_cache, v_cache, tables, out, window)
    ref = _reference(q, k_cache, v_cache, lists, ctx, qlens, window)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)


@pytest.mark.slow
def test_padding_rows_get_zeros(ta: ModuleType) -> None:
    """A captured batch's padding rows have no keys (context 0): zeros, not NaN."""
    k_cache, v_cache = _pool(2, 8, torch.float32, seed=1)
    tables, _ = _tables([20, 16], [1, 1], 8, 1, seed=2)
    tables.context_lens[1] = 0
    q = torch.randn(2, 4, HD, device=DEVICE)
    out = torch.full_like(q, 7.0)
    ta.paged_attention(q, k_cache, v_cache, tables, out)
    assert torch.isfinite(out).all()
    assert out[1].abs().max().item() == 0.0


def test_tiles_and_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pt.tiles_for([1, 33, 16], 16) == ([0, 1, 1, 1, 2], [0, 0, 16, 32, 0])
    assert selector.kernel_fits(64, 16) and selector.kernel_fits(128, 32)
    assert selector.kernel_fits(64, 8) and selector.kernel_fits(64, 128)
    assert (
        not selector.kernel_fits(48, 16)
        and not selector.kernel_fits(8, 16)
        and not selector.kernel_fits(64, 24)
    )
    cpu = torch.device("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # as on a machine without CUDA
    assert not selector.uses_triton("auto", cpu, 64, 16)  # the CPU keeps PyTorch's paths
    assert not selector.uses_triton("torch", cpu, 64, 16)
    assert selector.uses_triton("triton", cpu, 64, 16)  # under the interpreter
    with pytest.raises(ValueError, match="a power of 2"):
        selector.uses_triton("triton", cpu, 48, 16)
    with pytest.raises(ValueError, match="must be one of"):
        selector.uses_triton("flash", cpu, 64, 16)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs a CUDA device, not cpu"):
        selector.uses_triton("triton", cpu, 64, 16)


COMPILE = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction
from promptcache.model.attention import triton_kernel as ta

fn = JITFunction(ta._attend)
names = list(fn.arg_names)
constexprs = ("G", "G_PAD", "BLOCK_Q", "BS", "TILE", "D", "HAS_WINDOW", "INTERP")
for arch in (80, 90):
    for dtype in ("bf16", "fp32"):
        sig = {}
        for n in names:
            if n in constexprs:
                sig[n] = "constexpr"
            elif n in ("q_ptr", "k_ptr", "v_ptr", "o_ptr"):
                sig[n] = "*" + dtype
            else:
                sig[n] = "*i32" if n.endswith("_ptr") else "fp32" if n == "scale" else "i32"
        for block_q, g_pad, window in ((1, 16, False), (16, 4, True)):
            consts = dict(G=3, G_PAD=g_pad, BLOCK_Q=block_q, BS=16, D=64, HAS_WINDOW=window)
            consts["TILE"] = 64
            consts["INTERP"] = False
            src = ASTSource(fn, sig, {(names.index(k),): v for k, v in consts.items()})
            kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32))
            assert kernel.asm["cubin"], (arch, dtype, block_q)
print("compiled")
"""


@pytest.mark.slow
def test_compiles_for_gpus() -> None:
    """The kernel compiles down to machine code for A100 and H100 (sm_80, sm_90), bf16
    and fp32, decode and prefill tiles: Triton's compiler and ptxas run without a GPU,
    and check what the interpreter cannot, such as the types of loop-carried values and
    the shapes a tensor-core dot accepts. In a fresh process: the interpreter, on in
    this one, changes how Triton's language behaves."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "compiled"
