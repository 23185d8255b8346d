"""A GGUF file's 4-bit weights, read as they are stored: 4-bit codes and per-32 scales.

GGUF's Q4_1 keeps 32 weights in a block of 20 bytes: a float16 scale `d`, a float16 minimum
`m` and 32 four-bit codes `q`, the weight being `d * q + m` (Q4_0: 18 bytes, no minimum,
`d * (q - 8)`). Codes `j` and `j + 16` of a block share byte `j` (low and high nibble).

The projections come out under our module's names, fused as the dense loader fuses them
(q/k/v, gate/up), and with llama.cpp's rotary row order of q and k undone as Hugging Face
undoes it, so that `dequantize()` equals, bit for bit, the weights of the dequantized
safetensors conversion. Tensors of other types (norms, Q8_0 embeddings) are not read here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from promptcache.model.errors import ModelLoadError
from promptcache.model.quant import Q4Tensor

# GGUF name inside a block -> (our fused module, its place among the parts)
_PARTS = {
    "attn_q": ("self_attn.qkv_proj", 0),
    "attn_k": ("self_attn.qkv_proj", 1),
    "attn_v": ("self_attn.qkv_proj", 2),
    "attn_output": ("self_attn.o_proj", 0),
    "ffn_gate": ("mlp.gate_up_proj", 0),
    "ffn_up": ("mlp.gate_up_proj", 1),
    "ffn_down": ("mlp.down_proj", 0),
}
_PART_COUNT = {"self_attn.qkv_proj": 3, "mlp.gate_up_proj": 2}


def decode_blocks(raw: np.ndarray, with_min: bool) -> Q4Tensor:
    """(N, row_bytes) uint8 rows of Q4_1 (`with_min`) or Q4_0 blocks -> a `Q4Tensor`."""
    size = 20 if with_min else 18
    n = raw.shape[0]
    blocks = np.ascontiguousarray(raw).reshape(n, -1, size)
    scale = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    if with_min:
        low = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    else:
        low = -8.0 * scale
    packed = blocks[..., size - 16 :]
    codes = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1)
    return Q4Tensor(torch.from_numpy(codes), torch.from_numpy(scale), torch.from_numpy(low))


def rotary_rows(n: int, heads: int) -> torch.Tensor:
    """The row order that turns llama.cpp's q/k layout back into Hugging Face's."""
    half = n // heads // 2
    return torch.arange(n).view(heads, half, 2).transpose(1, 2).reshape(-1)


def read_q4(gguf: Path, num_heads: int, num_kv_heads: int) -> dict[str, Q4Tensor]:
    """Every 4-bit projection of `gguf`, by our module name ("layers.3.mlp.down_proj").

    Raises `ModelLoadError` when a projection is stored in another type (the caller falls
    back to dense weights)."""
    from gguf import GGMLQuantizationType, GGUFReader

    kinds = {GGMLQuantizationType.Q4_1: True, GGMLQuantizationType.Q4_0: False}
    parts: dict[str, dict[int, Q4Tensor]] = {}
    for t in GGUFReader(gguf).tensors:
        pieces = t.name.split(".")
        if pieces[0] != "blk" or pieces[2] not in _PARTS:
            continue
        if t.tensor_type not in kinds:
            raise ModelLoadError(
                f"{t.name} in {gguf.name} is {t.tensor_type.name}, not Q4_0 or Q4_1: "
                "4-bit serving needs every projection in a 4-bit type"
            )
        q = decode_blocks(np.asarray(t.data), kinds[t.tensor_type])
        if pieces[2] in ("attn_q", "attn_k"):
            q = q.rows(
                rotary_rows(q.shape[0], num_heads if pieces[2] == "attn_q" else num_kv_heads)
            )
        module, place = _PARTS[pieces[2]]
        parts.setdefault(f"layers.{pieces[1]}.{module}", {})[place] = q
    out = {}
    for name, by_place in parts.items():
        count = _PART_COUNT.get(name.split(".", 2)[2], 1)
        if len(by_place) != count:
            raise ModelLoadError(f"{gguf.name}: {name} has {len(by_place)} of {count} parts")
        out[name] = Q4Tensor.cat([by_place[i] for i in range(count)])
    return out
