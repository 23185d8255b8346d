"""4-bit matmul on CPU by a small C kernel of our own (`csrc/q4_matmul.c`), built at first
use (`model.kernels.build`).

`y = x W^T` for the few rows of a decode step, W kept as GGUF's 4-bit codes with a scale
and a minimum per 32 weights: every weight is read once per call, whatever the number of
rows (PyTorch's int4 kernel dequantizes again for every 4 rows). `pack()` lays a
`Q4Tensor` out as the kernel reads it (tiles of 16 outputs by blocks of 32 inputs, two
codes a byte, in the layout this CPU's build reads); `matmul()` runs it for float32 or
bfloat16 rows. On AVX512-BF16 bfloat16 rows take a dpbf16 path; float32 rows (and
bfloat16 ones elsewhere) an AVX512F or AVX2 FMA path; CPUs with neither, loops the
compiler vectorizes.

Sums are float32: per block, the codes' dot product with x, times the scale, plus the
minimum times the block's sum of x. That equals the product with the dequantized weights
(`Q4Tensor.dequantize()`) up to float32 rounding of the sums (bfloat16 rows: and of y).
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
from promptcache.model.quant import GROUP, Q4Tensor

TILE = 16  # outputs per tile (the kernel's)
LANES = GROUP // 8  # 32-bit lanes of 8 codes per column and block


SIGNATURES: dict[str, Signature] = {
    "pc_q4_matmul": ([P, I32, I64, I32, P, P, P, I32, I32, P, I64, I32], I32),
    "pc_q4_paths": ([], I32),
    "pc_q4_layout": ([], I32),
}


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernel, or None (logged) where it cannot be built or loaded."""
    return build.library("q4_matmul", SIGNATURES)


def paths() -> list[str]:
    """The kernel's hand-vectorized paths on this CPU: "dpbf16" (bfloat16 rows on
    AVX512-BF16), "avx512" or "avx2" (float32 rows; bfloat16 rows elsewhere); empty where
    only the compiler-vectorized loops serve (or no kernel)."""
    lib = library()
    bits = lib.pc_q4_paths() if lib is not None else 0
    names = ((1, "dpbf16"), (4, "avx512"), (2, "avx2"))
    return [name for bit, name in names if bits & bit]


@dataclass(slots=True)
class PackedQ4:
    """A (N, K) weight in the kernel's layout (`csrc/q4_matmul.c`): 256 bytes of codes per
    tile of 16 outputs and block of 32 inputs, two (N/16, K/32, 16) float32 arrays per
    block (layout 1: 16 * scale and low - 16 * scale; layout 0: scale and low), N padded
    to a multiple of 16 with zeros."""

    codes: torch.Tensor
    scale: torch.Tensor
    low: torch.Tensor
    out_features: int
    in_features: int
    args: tuple[int, ...] = ()  # the kernel's weight arguments, computed once

    def __post_init__(self) -> None:
        ptrs = (self.codes.data_ptr(), self.scale.data_ptr(), self.low.data_ptr())
        self.args = (*ptrs, self.out_features, self.in_features)


def pack(q: Q4Tensor) -> PackedQ4:
    """Lay `q` out as `csrc/q4_matmul.c` reads it (the layout of this CPU's build)."""
    n, k = q.shape
    pad = -n % TILE
    codes = torch.nn.functional.pad(q.codes, (0, 0, 0, pad))
    tiles, blocks = (n + pad) // TILE, k // GROUP

    def per_tile(v: torch.Tensor) -> torch.Tensor:
        v = torch.nn.functional.pad(v.float(), (0, 0, 0, pad))
        return v.view(tiles, TILE, blocks).transpose(1, 2).contiguous()

    scale, low = per_tile(q.scale), per_tile(q.low)
    lib = library()
    if lib is not None and lib.pc_q4_layout() == 0:
        # (tile, n, block, half, kk) -> (tile, block, kk, n, half): half 0 low nibble
        c = codes.view(tiles, TILE, blocks, 2, TILE).permute(0, 2, 4, 1, 3)
        return PackedQ4((c[..., 0] | (c[..., 1] << 4)).contiguous(), scale, low, n, k)
    # (tile, n, block, lane, j) -> (tile, block, lane, n, j): lane q of column n holds the
    # codes of inputs 8q .. 8q+7, two a byte (j even in the low nibble), little-endian
    c = codes.view(tiles, TILE, blocks, LANES, 8).permute(0, 2, 3, 1, 4)
    packed = (c[..., 0::2] | (c[..., 1::2] << 4)).contiguous()
    return PackedQ4(packed, scale * 16, low - scale * 16, n, k)  # codes read as 1 + c/16


def matmul(x: torch.Tensor, w: PackedQ4) -> torch.Tensor:
    """x (M, K) float32 or bfloat16, rows contiguous -> x W^T (M, N) in x's dtype."""
    m, k = x.shape
    if k != w.in_features or x.stride(1) != 1 or x.dtype not in DTYPE_CODES:
        raise ValueError(f"4-bit matmul: x {tuple(x.shape)} {x.dtype} for weight {w.in_features}")
    y = x.new_empty((m, w.out_features))
    kernel = _kernel()
    threads = torch.get_num_threads()
    err = kernel(
        x.data_ptr(),
        DTYPE_CODES[x.dtype],
        x.stride(0),
        m,
        *w.args,
        y.data_ptr(),
        w.out_features,
        threads,
    )
    if err:
        raise RuntimeError(f"4-bit matmul kernel failed ({err})")
    return y


@functools.cache
def _kernel() -> Any:
    lib = library()
    assert lib is not None, "library() is None"
    return lib.pc_q4_matmul
