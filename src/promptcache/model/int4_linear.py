"""Linear layers that read 4-bit weights: PyTorch's packed int4 CPU matmul.

`torch.ops.aten._weight_int4pack_mm_for_cpu` multiplies activations by int4 codes packed
two to a byte, with a scale and a zero per group of 32 along K: `w = (q - 8) * scale +
zero`. GGUF's Q4_1 `w = d * q + m` is that with `scale = d` and `zero = m + 8 d`, so the
file's blocks are served as they are, four bits a weight, instead of dequantized to 16.

A decode step reads every weight once for a few rows: there the 4-bit kernel reads 4x
fewer bytes than bfloat16 and wins. For many rows (a prefill chunk) the dense bfloat16
matmul is faster (measured on the bundled model's shapes, 2 cores, AVX512-BF16; see
`DENSE_FROM_ROWS`), so each layer also keeps its weights dequantized for those: the cost is
a quarter more weight memory than dense alone.

With float32 activations the kernel is 20-40x slower than a float32 matmul (measured on
the same CPU), so 4-bit weights need bfloat16. They are enabled only where bfloat16 itself
is native (AVX512 with bf16 support), where they were measured; on an AVX2-only CPU, where
`auto` picks float32, `int4_supported` says no and the loader serves dense weights with a
message saying why.
"""

from __future__ import annotations

import torch
from torch import nn

from promptcache.model.cpu_linear import can_pack
from promptcache.model.q4 import GROUP, Q4Tensor

# Rows from which a layer uses its dense copy. Per projection of the bundled model, its
# weights coming from memory as in a decode step (`bench/int4.py`, 2 cores, AVX512-BF16),
# the int4 kernel's time grows with every 4 rows (it dequantizes the weights again for
# each block of rows) while the bf16 matmul's barely moves: int4 is ~4x faster at 1-2 rows,
# ~2x at 4, 1.2-1.4x at 8 and 0.8-0.9x at 16. In the engine, decode at batch 16 runs 9 %
# faster with the dense copy (337 vs 310 tokens/s), batch 8 as fast either way.
DENSE_FROM_ROWS = 12


class Int4Linear(nn.Module):
    """y = x W^T + b with W as packed int4 codes (few rows) or `dense`, a module computing
    the same product from the dequantized weights (many rows)."""

    def __init__(
        self, q: Q4Tensor, bias: torch.Tensor | None, dtype: torch.dtype, dense: nn.Module
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.codes.to(torch.int32), 1)
        zero = q.low + 8 * q.scale
        pairs = torch.stack([q.scale, zero], dim=-1)  # (N, K / 32, 2)
        self.scale_zeros = pairs.transpose(0, 1).contiguous().to(dtype)  # (K / 32, N, 2)
        self.bias = None if bias is None else bias.detach().to(dtype)
        self.dense = dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, in) -> (T, out)
        if x.shape[0] >= DENSE_FROM_ROWS:
            return self.dense(x)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, GROUP, self.scale_zeros)
        return y if self.bias is None else y + self.bias


def int4_supported(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when 4-bit weights can be served fast here, else the reason they cannot."""
    if device.type != "cpu":
        return f"4-bit weights are served on CPU only, not {device.type}"
    if dtype != torch.bfloat16:
        return f"4-bit weights need dtype bfloat16 (the int4 kernel is slow in {dtype})"
    if not can_pack(device, dtype) or not torch.backends.cpu.get_cpu_capability().startswith(
        "AVX512"
    ):
        return "4-bit weights need a CPU with AVX512 and bfloat16 support (the int4 kernel)"
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        return "this PyTorch build has no int4 CPU matmul"
    return None
