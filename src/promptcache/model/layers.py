"""Small building blocks of the Llama-family forward: RMSNorm, rotary embedding, SwiGLU MLP.

Numerics follow transformers exactly (RMSNorm in float32, cos/sin computed in float32 and
cast to the activation dtype) so that our logits match Hugging Face's on the same weights.
On CPU, `LlamaForCausalLM.use_layer_ops()` may hand the norm (with the residual add before
it) and SiLU(gate) * up to one C pass each (`model.cpu_ops`; bfloat16, and float32 for
4-bit models).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from promptcache.model import cpu_ops


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, computed in float32.

    PyTorch's fused `rms_norm` on the float32 activations gives the same bits as
    transformers' `x * rsqrt(mean(x^2) + eps)` and is ~7x (float32) to ~17x (bfloat16)
    faster over a 512-token chunk on CPU (one pass instead of six kernels).
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.fused = False  # add_norm by cpu_ops (on CPU; see use_layer_ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == self.weight.dtype:
            # On CPU the fused kernel computes 16-bit inputs in float32 and rounds once, so
            # these are the bits of the general form below with one or two ops fewer (a
            # decode step runs two norms a layer): bfloat16 the upcast and downcast, float32
            # the product by the weight (fused the same way round).
            if x.dtype == torch.float32:
                return F.rms_norm(x, self.weight.shape, self.weight, eps=self.eps)
            if x.dtype == torch.bfloat16:
                return self.weight * F.rms_norm(x, self.weight.shape, eps=self.eps)
        normed = F.rms_norm(x.float(), self.weight.shape, eps=self.eps)
        return self.weight * normed.to(x.dtype)

    def add_norm(
        self, x: torch.Tensor, h: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream x plus h (x itself where h is None) and its norm. Fused, x
        is updated in place (it is the stream's own tensor: a layer's input is not kept)."""
        if self.fused:
            return x, cpu_ops.add_rms_norm(x, h, self.weight, self.eps)
        if h is not None:
            x = x + h
        return x, self(x)


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables indexed by absolute token position.

    transformers rotates `x * cos + rotate_half(x) * sin` with `rotate_half(x) = [-x2, x1]`.
    The sine table here carries that sign instead (`[-sin1, sin2]`), so the rotation is
    `x * cos + [x2, x1] * sin'`: a roll instead of a negation and a cat, the same bits
    (a product's sign is exact). See `rotate`."""

    def __init__(self, inv_freq: torch.Tensor, scale: float, max_positions: int) -> None:
        super().__init__()
        positions = torch.arange(max_positions, dtype=torch.int64).float()
        freqs = positions[:, None] * inv_freq[None, :]  # (P, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (P, hd)
        sin = emb.sin() * scale
        half = sin.shape[-1] // 2
        signed = torch.cat((-sin[:, :half], sin[:, half:]), -1)
        self.cos: torch.Tensor
        self.sin: torch.Tensor
        self.register_buffer("cos", emb.cos() * scale, persistent=False)
        self.register_buffer("sin", signed, persistent=False)

    def lookup(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, signed sin (T, 1, hd) for the tokens' positions (T,); once per forward."""
        cos = self.cos[positions].to(dtype).unsqueeze(1)
        sin = self.sin[positions].to(dtype).unsqueeze(1)
        return cos, sin


def rotate(x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate x (T, heads, hd) with cos/signed sin from `RotaryEmbedding.lookup`; q and k
    side by side (T, H + KV, hd) rotate in one pass."""
    cos, sin = cos_sin
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * sin


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate and up fused into one matmul."""

    def __init__(self, hidden: int, intermediate: int, bias: bool) -> None:
        super().__init__()
        self.intermediate = intermediate
        self.fused = False  # silu(gate) * up by cpu_ops (on CPU; see use_layer_ops)
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        if self.fused:
            return self.down_proj(cpu_ops.silu_mul(gate_up, self.intermediate))
        gate, up = gate_up.split(self.intermediate, dim=-1)
        return self.down_proj(F.silu(gate) * up)
