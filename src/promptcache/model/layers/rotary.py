"""The rotary position embedding: cos/sin tables computed in float32 and cast to the
activation dtype, as transformers does, and the rotation of q and k by them."""

from __future__ import annotations

import torch
from torch import nn


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
