"""Decode attention on CPU by a small C kernel of our own, built at first use.

Each decode's single query attends to its context where the blocks lie in the pool: no
gather, no padding to the longest context, no mask; work items of (sequence, KV head,
256 keys) spread over PyTorch's own OpenMP threads, joined by their softmax maxima and
sums (`csrc/decode_attention.c`). Per layer, 2 cores, bf16, pool in memory
(`bench/attention.py`): 1 x 4.6k keys 0.17-0.33 ms against 0.50 gathered, 1 x 128 keys
0.016 against 0.107, 8 x 1k 0.33 against 0.97.

The library is built at first use (`model.kernels.build`: the system's C compiler, once per
source, flags and CPU) and loaded with ctypes; loading it leaves the process's
floating-point state as it was (subnormals kept). Where there is no compiler, or the build
fails, `library()` is None, the reason is logged once, and attention keeps PyTorch's paths.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from promptcache.model.kernels import build
from promptcache.model.kernels.build import F32, I32, I64, P, Signature

MAX_GROUP, MAX_HEAD_DIM = 16, 256  # the kernel's limits (heads per KV head, head size)
_SYMBOLS = {torch.bfloat16: "pc_decode_bf16", torch.float32: "pc_decode_f32"}
_ARGS = [P, I64, I64, P, P, P, I64, P, I32, I32, I32, I32, I32, I64, I64, F32, P, I64, I64, I32]
SIGNATURES: dict[str, Signature] = {name: (_ARGS, I32) for name in _SYMBOLS.values()}


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernel, or None (logged) where it cannot be built or loaded."""
    return build.library("decode_attention", SIGNATURES)


def symbol(dtype: torch.dtype) -> str:
    """The kernel's C function for queries of `dtype`."""
    return _SYMBOLS[dtype]


def supports(dtype: torch.dtype, num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    """Whether the kernel serves this dtype and head layout (and could be built)."""
    group = num_heads // num_kv_heads
    fits = dtype in _SYMBOLS and group <= MAX_GROUP and head_dim <= MAX_HEAD_DIM
    return fits and library() is not None


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
) -> torch.Tensor:
    """q (B, H, hd) over caches (KV, num_blocks, block_size, hd), each row's first
    `context_lens[b]` keys through its row of `block_tables` (B, W) int64 -> (B, H, hd)."""
    lib = library()
    assert lib is not None, "supports() is False"
    b, h, hd = q.shape
    kv, _, bs, _ = k_cache.shape
    assert (
        q.stride(2) == 1
        and k_cache.stride()[2:] == (hd, 1)
        and k_cache.stride() == v_cache.stride()
    )
    assert block_tables.dtype == context_lens.dtype == torch.int64 and block_tables.stride(1) == 1
    out = torch.empty((b, h, hd), dtype=q.dtype)
    err = getattr(lib, _SYMBOLS[q.dtype])(
        q.data_ptr(),
        q.stride(0),
        q.stride(1),
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        block_tables.data_ptr(),
        block_tables.stride(0),
        context_lens.data_ptr(),
        b,
        h,
        kv,
        hd,
        bs,
        k_cache.stride(0),
        k_cache.stride(1),
        hd**-0.5,
        out.data_ptr(),
        out.stride(0),
        out.stride(1),
        torch.get_num_threads(),
    )
    if err:
        raise RuntimeError(f"decode attention kernel failed ({err})")
    return out
