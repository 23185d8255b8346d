"""An LM head served from a GGUF's 8-bit embeddings (Q8_0) by our C kernel
(`model.kernels.q8_matmul`) for a step's few sampled rows, handing many rows (whole-prompt
logits) to the dense head it wraps."""

from __future__ import annotations

import torch
from torch import nn

from promptcache.model.kernels.q8_matmul import dense_from_rows, matmul, pack
from promptcache.model.quant import Q8Tensor


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
