"""Linear layers that read 4-bit weights: our C kernel, or PyTorch's packed int4 CPU matmul.

GGUF's Q4_1 keeps `w = d * q + m` per 32 weights. A decode step reads every weight once for
a few rows, so reading four bits a weight instead of sixteen (or thirty-two) is where the
time goes. Two kernels can do it:

- `model.kernels.q4_matmul` (`csrc/q4_matmul.c`, ours, built at first use with the system's C
  compiler): reads each weight once per call whatever the number of rows; bfloat16 rows by
  dpbf16 on AVX512-BF16, float32 rows (any rows elsewhere) by AVX512F or AVX2 FMAs.
  Preferred.
- `torch.ops.aten._weight_int4pack_mm_for_cpu` where ours cannot be built: `w = (q - 8) *
  scale + zero`, which is Q4_1 with `scale = d`, `zero = m + 8 d`. It dequantizes again for
  every 4 rows, and is 20-40x slower than a float32 matmul with float32 rows, so it serves
  bfloat16 on AVX512 only.

For many rows (prefill chunks) the dense matmul is faster, so each layer also keeps its
weights dequantized and uses them from `dense_from_rows(dtype)` rows up (measured per
projection of the bundled model, 2 cores, AVX512-BF16 EPYC, `bench/int4.py`).
"""

from __future__ import annotations

import torch
from torch import nn

from promptcache.model.device import can_pack
from promptcache.model.kernels import q4_matmul
from promptcache.model.quant import GROUP, Q4Tensor

# Rows from which a layer uses its dense copy, by activation dtype (per projection of the
# bundled model, 2 cores, AMD EPYC, against oneDNN's prepacked matmul of the same dtype).
# bfloat16 (dpbf16 path): our kernel takes 1.1-1.3x less time than oneDNN at 12 rows,
# 1.0-1.3x at 16, 0.9-1.1x at 24, 1.4-1.5x at 8. float32: ~6x less at 1 row, ~1.5x at 8,
# 1.0-1.15x at 16, 0.9-1.1x at 24 (AVX512F path; the AVX2 one ~1.07x at 16, 0.7x at 32).
# PyTorch's int4 kernel (bfloat16 only) is ~4x faster than bf16 at 1-2 rows, 1.2-1.4x at
# 8, 0.8-0.9x at 16: 12.
DENSE_FROM_ROWS = {torch.bfloat16: 16, torch.float32: 16}
TORCH_INT4_DENSE_FROM_ROWS = 12


class Int4Linear(nn.Module):
    """y = x W^T + b with W as 4-bit codes (few rows) or `dense`, a module computing the
    same product from the dequantized weights (many rows)."""

    def __init__(
        self, q: Q4Tensor, bias: torch.Tensor | None, dtype: torch.dtype, dense: nn.Module
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.bias = None if bias is None else bias.detach().to(dtype)
        self.dense = dense
        self.ours = q4_matmul.library() is not None
        if self.ours:
            self.packed = q4_matmul.pack(q)
        else:
            self.int4pack = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                q.codes.to(torch.int32), 1
            )
            pairs = torch.stack([q.scale, q.low + 8 * q.scale], dim=-1)  # (N, K / 32, 2)
            self.scale_zeros = pairs.transpose(0, 1).contiguous().to(dtype)  # (K / 32, N, 2)
        self.dense_from = dense_from_rows(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, in) -> (T, out)
        if x.shape[0] >= self.dense_from:
            return self.dense(x)
        if self.ours:
            y = q4_matmul.matmul(x.contiguous(), self.packed)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                x, self.int4pack, GROUP, self.scale_zeros
            )
        return y if self.bias is None else y + self.bias


def dense_from_rows(dtype: torch.dtype) -> int:
    """Rows from which a 4-bit layer multiplies by its dense copy instead."""
    return TORCH_INT4_DENSE_FROM_ROWS if q4_matmul.library() is None else DENSE_FROM_ROWS[dtype]


def int4_kernel(dtype: torch.dtype) -> str:
    """Which kernel serves 4-bit weights for rows of `dtype` here (for logs and benches)."""
    if q4_matmul.library() is None:
        return "PyTorch int4pack"
    fast = q4_matmul.paths()
    path = "dpbf16" if dtype == torch.bfloat16 and "dpbf16" in fast else None
    path = path or next((p for p in fast if p != "dpbf16"), "compiler-vectorized")
    return f"promptcache C ({path})"


def int4_supported(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when 4-bit weights can be served fast here, else the reason they cannot."""
    if device.type != "cpu":
        return f"4-bit weights are served on CPU only, not {device.type}"
    if dtype not in DENSE_FROM_ROWS:
        return f"4-bit weights need dtype float32 or bfloat16, not {dtype}"
    if q4_matmul.library() is not None:
        return None
    why = "our 4-bit C kernel could not be built (see the log)"
    if dtype != torch.bfloat16:
        return f"{why}, and PyTorch's int4 kernel is slow in {dtype}"
    if not can_pack(device, dtype) or not torch.backends.cpu.get_cpu_capability().startswith(
        "AVX512"
    ):
        return f"{why}, and PyTorch's int4 kernel needs a CPU with AVX512 and bfloat16"
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return f"{why}, and this PyTorch build has no int4 CPU matmul"
    return None
