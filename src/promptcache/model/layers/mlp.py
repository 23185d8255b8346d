"""The SwiGLU MLP of Llama-family decoders, gate and up fused into one matmul. On CPU the
network may hand SiLU(gate) * up to one C pass (`model.kernels.layer_ops`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from promptcache.model.kernels import layer_ops


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate and up fused into one matmul."""

    def __init__(self, hidden: int, intermediate: int, bias: bool, fused: bool = False) -> None:
        """`fused`: SiLU(gate) * up by one C pass of layer_ops (CPU; the kernel set says)."""
        super().__init__()
        self.intermediate = intermediate
        self.fused = fused
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        if self.fused:
            return self.down_proj(layer_ops.silu_mul(gate_up, self.intermediate))
        gate, up = gate_up.split(self.intermediate, dim=-1)
        return self.down_proj(F.silu(gate) * up)
