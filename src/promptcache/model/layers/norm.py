"""RMSNorm, in float32 as transformers computes it, so that our logits match Hugging Face's
on the same weights. On CPU the network may hand the norm, with the residual add before it,
to one C pass (`model.kernels.layer_ops`; bfloat16, and float32 for 4-bit models).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from promptcache.model.kernels import layer_ops


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension, computed in float32.

    PyTorch's fused `rms_norm` on the float32 activations gives the same bits as
    transformers' `x * rsqrt(mean(x^2) + eps)` and is ~7x (float32) to ~17x (bfloat16)
    faster over a 512-token chunk on CPU (one pass instead of six kernels).
    """

    def __init__(self, dim: int, eps: float, fused: bool = False) -> None:
        """`fused`: `add_norm` by one C pass of layer_ops (CPU; the kernel set says)."""
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps
        self.fused = fused

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
            return x, layer_ops.add_rms_norm(x, h, self.weight, self.eps)
        if h is not None:
            x = x + h
        return x, self(x)
