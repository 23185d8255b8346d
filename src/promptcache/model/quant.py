"""Quantized weights as a GGUF file stores them, in tensors: 4-bit codes with a scale and a
minimum per 32 weights (Q4_0, Q4_1), and 8-bit codes with a scale per 32 (Q8_0). The GGUF
readers (`model.loading`) make them, the kernels (`model.kernels`) lay them out as they read
them, and `dequantize()` gives the float32 weights GGUF's reference computes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

GROUP = 32  # weights per block, every type here


@dataclass(slots=True)
class Q4Tensor:
    """An (N, K) weight as codes (N, K) uint8 in 0..15, a scale and the weight of code 0
    per group of 32 along K ((N, K / 32) float32 each)."""

    codes: torch.Tensor
    scale: torch.Tensor
    low: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        n, k = self.codes.shape
        return int(n), int(k)

    def dequantize(self) -> torch.Tensor:
        """The float32 weights, computed as GGUF's reference does (`d * q + m`)."""
        n, k = self.shape
        groups = self.codes.view(n, k // GROUP, GROUP).float()
        return (groups * self.scale[..., None] + self.low[..., None]).view(n, k)

    def rows(self, index: torch.Tensor) -> Q4Tensor:
        return Q4Tensor(self.codes[index], self.scale[index], self.low[index])

    @staticmethod
    def cat(parts: list[Q4Tensor]) -> Q4Tensor:
        return Q4Tensor(
            torch.cat([p.codes for p in parts]),
            torch.cat([p.scale for p in parts]),
            torch.cat([p.low for p in parts]),
        )


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
