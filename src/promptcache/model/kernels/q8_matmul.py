"""The 8-bit matmul of the LM head over a GGUF's 8-bit embeddings (Q8_0): the binding of
our C kernel (`csrc/q8_matmul.c`), built at first use (`model.kernels.build`).

A 4-bit GGUF model often stores its token embeddings, which a tied model's LM head
multiplies by, as Q8_0: 32 signed 8-bit codes and a float16 scale per 32 weights. With
`--weights q4` the head reads those bytes (half of bfloat16's, a quarter of float32's)
instead of the dequantized copy: `model.loading.gguf_q8` reads them, `pack()` lays them
out as the kernel reads them (tiles of 16 outputs by pairs of inputs), and
`model.layers.q8_head` serves a step's sampled rows and hands many rows (whole-prompt
logits) to the dense head it wraps.

Each block of 32 of a row of x is rounded to 16-bit integers with one scale (the block's
max |x| / 32767) and the products summed exactly in 32-bit integers per block, then scaled
in float32: the logits equal those of the dequantized weights (`Q8Tensor.dequantize()`) to
within that rounding of x, below bfloat16's for every element within 2^7 of its block's
largest.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Any

import torch

from promptcache.model.kernels import build
from promptcache.model.kernels.build import I32, I64, P, Signature
from promptcache.model.kernels.dtypes import DTYPE_CODES
from promptcache.model.quant import GROUP, Q8Tensor

TILE = 16  # outputs per tile (the kernel's)
# Rows from which the head multiplies by its dense copy, by the kernel's path (bundled
# model, 2 cores, AMD EPYC). "vnni": 0.4x oneDNN bfloat16's time at 1 row, 0.5x at 8, 0.9x
# at 16. Without it (built for x86-64-v3, the compiler's loops; oneDNN capped to AVX2):
# 0.6x oneDNN float32's at 1 row, 2.6x at 4, so it serves single rows only. The kernel
# serves a step's sampled rows; whole-prompt logits (many rows) go dense.
DENSE_FROM_ROWS = {"vnni": 16, "": 2}


SIGNATURES: dict[str, Signature] = {
    "pc_q8_matmul": ([P, I32, I64, I32, P, P, I32, I32, P, I64, I32], I32),
    "pc_q8_paths": ([], I32),
}


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernel, or None (logged) where it cannot be built or loaded."""
    return build.library("q8_matmul", SIGNATURES)


def dense_from_rows() -> int:
    """Rows from which the head multiplies by its dense copy instead, on this CPU."""
    return DENSE_FROM_ROWS["vnni" if "vnni" in paths() else ""]


def paths() -> list[str]:
    """The kernel's hand-vectorized path on this CPU: ["vnni"] (AVX512-VNNI), or empty
    where the compiler's loops serve (or no kernel)."""
    lib = library()
    return ["vnni"] if lib is not None and lib.pc_q8_paths() & 1 else []


@dataclass(slots=True)
class PackedQ8:
    """A (N, K) weight in the kernel's layout: codes (N/16, K/32, 16, 16, 2) int8, scale
    (N/16, K/32, 16) float32, N padded to a multiple of 16 with zeros."""

    codes: torch.Tensor
    scale: torch.Tensor
    out_features: int
    in_features: int


def pack(q: Q8Tensor) -> PackedQ8:
    """Lay `q` out as `csrc/q8_matmul.c` reads it."""
    n, k = q.shape
    pad = -n % TILE
    codes = torch.nn.functional.pad(q.codes, (0, 0, 0, pad))
    tiles, blocks = (n + pad) // TILE, k // GROUP
    # (tile, n, block, pair, 2) -> (tile, block, pair, n, 2)
    c = codes.view(tiles, TILE, blocks, GROUP // 2, 2).permute(0, 2, 3, 1, 4).contiguous()
    scale = torch.nn.functional.pad(q.scale.float(), (0, 0, 0, pad))
    scale = scale.view(tiles, TILE, blocks).transpose(1, 2).contiguous()
    return PackedQ8(c, scale, n, k)


def matmul(x: torch.Tensor, w: PackedQ8) -> torch.Tensor:
    """x (M, K) float32 or bfloat16, rows contiguous -> x W^T (M, N) in float32."""
    m, k = x.shape
    if k != w.in_features or x.stride(1) != 1 or x.dtype not in DTYPE_CODES:
        raise ValueError(f"8-bit matmul: x {tuple(x.shape)} {x.dtype} for weight {w.in_features}")
    y = torch.empty((m, w.out_features), dtype=torch.float32)
    n = w.out_features
    ptrs = (w.codes.data_ptr(), w.scale.data_ptr())
    threads = torch.get_num_threads()
    err = _kernel()(
        x.data_ptr(), DTYPE_CODES[x.dtype], x.stride(0), m, *ptrs, n, k, y.data_ptr(), n, threads
    )
    if err:
        raise RuntimeError(f"8-bit matmul kernel failed ({err})")
    return y


@functools.cache
def _kernel() -> Any:
    lib = library()
    assert lib is not None, "library() is None"
    return lib.pc_q8_matmul
