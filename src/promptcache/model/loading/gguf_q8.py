"""A GGUF file's 8-bit LM head (Q8_0: 32 signed 8-bit codes and a float16 scale per 32
weights), read as it is stored, for `model.layers.q8_head`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from promptcache.model.errors import ModelLoadError
from promptcache.model.quant import Q8Tensor


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
