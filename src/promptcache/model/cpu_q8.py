"""The LM head from a GGUF's 8-bit embeddings (Q8_0) by a small C kernel of our own
(`csrc/q8_matmul.c`), built at first use (`model.cbuild`).

A 4-bit GGUF model often stores its token embeddings, which a tied model's LM head
multiplies by, as Q8_0: 32 signed 8-bit codes and a float16 scale per 32 weights. With
`--weights q4` the head reads those bytes (half of bfloat16's, a quarter of float32's)
instead of the dequantized copy: `read_q8_head()` reads them, `pack()` lays them out as the
kernel reads them (tiles of 16 outputs by pairs of inputs), `Q8Head` serves a step's
sampled rows and hands many rows (whole-prompt logits) to the dense head it wraps.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from promptcache.model import cbuild
from promptcache.model.errors import ModelLoadError

TILE = 16  # outputs per tile (the kernel's)
GROUP = 32  # weights per Q8_0 block
# Rows from which the head multiplies by its dense copy, by the kernel's path (bundled
# model, 2 cores, AMD EPYC). "vnni": 0.4x oneDNN bfloat16's time at 1 row, 0.5x at 8, 0.9x
# at 16. Without it (built for x86-64-v3, the compiler's loops; oneDNN capped to AVX2):
# 0.6x oneDNN float32's at 1 row, 2.6x at 4, so it serves single rows only. The kernel
# serves a step's sampled rows; whole-prompt logits (many rows) go dense.
DENSE_FROM_ROWS = {"vnni": 16, "": 2}
_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


@dataclass(slots=True)
class Q8Tensor:
    """An (N, K) weight as codes (N, K) int8 and a scale per 32 along K ((N, K/32) fp32)."""

    codes: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        n, k = self.codes.shape
        return int(n), int(k)

    def dequantize(self) -> torch.Tensor:
        """The float32 weights, as GGUF's reference computes them (`d * q`)."""
        n, k = self.shape
        groups = self.codes.view(n, k // GROUP, GROUP).float()
        return (groups * self.scale[..., None]).view(n, k)


def decode_q8_0(raw: np.ndarray) -> Q8Tensor:
    """(N, row_bytes) uint8 rows of Q8_0 blocks (float16 scale, 32 int8 codes)."""
    n = raw.shape[0]
    blocks = np.ascontiguousarray(raw).reshape(n, -1, 34)
    scale = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    codes = blocks[..., 2:].copy().view(np.int8).reshape(n, -1)
    return Q8Tensor(torch.from_numpy(codes), torch.from_numpy(scale))


def read_q8_head(gguf: Path, tied: bool) -> Q8Tensor:
    """The LM head's weight as stored in `gguf`: `output.weight`, or for a `tied` model
    `token_embd.weight`; `ModelLoadError` unless it is there and Q8_0."""
    from gguf import GGMLQuantizationType, GGUFReader

    name = "token_embd.weight" if tied else "output.weight"
    t = next((t for t in GGUFReader(gguf).tensors if t.name == name), None)
    if t is None:
        raise ModelLoadError(f"{gguf.name} has no {name}")
    if t.tensor_type != GGMLQuantizationType.Q8_0:
        raise ModelLoadError(f"{t.name} in {gguf.name} is {t.tensor_type.name}, not Q8_0")
    return decode_q8_0(np.asarray(t.data))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernel, or None (logged) where it cannot be built or loaded."""
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    args = [p, i32, i64, i32, p, p, i32, i32, p, i64, i32]
    return cbuild.library("q8_matmul", {"pc_q8_matmul": (args, i32), "pc_q8_paths": ([], i32)})


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
    if k != w.in_features or x.stride(1) != 1 or x.dtype not in _DTYPES:
        raise ValueError(f"8-bit matmul: x {tuple(x.shape)} {x.dtype} for weight {w.in_features}")
    y = torch.empty((m, w.out_features), dtype=torch.float32)
    n = w.out_features
    ptrs = (w.codes.data_ptr(), w.scale.data_ptr())
    threads = torch.get_num_threads()
    err = _kernel()(
        x.data_ptr(), _DTYPES[x.dtype], x.stride(0), m, *ptrs, n, k, y.data_ptr(), n, threads
    )
    if err:
        raise RuntimeError(f"8-bit matmul kernel failed ({err})")
    return y


@functools.cache
def _kernel() -> Any:
    lib = library()
    assert lib is not None, "library() is None"
    return lib.pc_q8_matmul


class Q8Head(nn.Module):
    """An LM head: logits (float32) from the 8-bit codes for few rows, else from `dense`
    (the module it replaces)."""

    def __init__(self, q: Q8Tensor, dense: nn.Module) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.packed = pack(q)
        self.dense = dense
        self.dense_from = dense_from_rows()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, hidden) -> (T, vocab)
        if x.shape[0] >= self.dense_from:
            return self.dense(x)
        return matmul(x.contiguous(), self.packed)
