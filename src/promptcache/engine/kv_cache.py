"""The KV block pool's memory: one preallocated tensor holding every layer's K and V blocks.

    data: (num_layers, 2, num_kv_heads, num_blocks, block_size, head_dim)

Heads-first, so that a sequence's gathered blocks are ready-made (KV, S, head_dim) matrices.

The number of blocks follows from the byte budget. Zero-filled so that masked-out padding
reads finite values (0 * NaN would poison attention).
"""

from __future__ import annotations

import hashlib
import json

import torch

from promptcache.model.spec import ModelSpec

KV_LAYOUT_VERSION = 1  # bump when the meaning of a block's bytes changes (layout, RoPE, ...)


def kv_identity(weights_fingerprint: str, dtype: torch.dtype, block_size: int) -> str:
    """What a KV block's bytes mean: the model's content fingerprint (weights, config,
    tokenizer), the KV dtype, the block size and the layout version. Seeds the chain hashes,
    so equal identities on any machine give equal hashes, and any change gives new ones."""
    facts = {
        "layout": KV_LAYOUT_VERSION,
        "model": weights_fingerprint,
        "dtype": str(dtype).removeprefix("torch."),
        "block_size": block_size,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def bytes_per_block(spec: ModelSpec, block_size: int, dtype: torch.dtype) -> int:
    return spec.kv_bytes_per_token * block_size * torch.empty((), dtype=dtype).element_size()


class KVCache:
    """Per-layer (K, V) views into one pool tensor."""

    def __init__(
        self,
        spec: ModelSpec,
        block_size: int,
        budget_bytes: int,
        dtype: torch.dtype,
        device: torch.device,
        scratch_block: bool = False,
    ) -> None:
        """`scratch_block`: one block more than the budget, outside the pool's `num_blocks`,
        where the padding rows of a captured decode batch write their K/V."""
        per_block = bytes_per_block(spec, block_size, dtype)
        self.num_blocks = budget_bytes // per_block
        if self.num_blocks < 1:
            raise ValueError(
                f"kv_cache_bytes={budget_bytes} is below one block ({per_block} bytes)"
            )
        self.block_size = block_size
        self.bytes_per_block = per_block
        self.scratch_block = self.num_blocks if scratch_block else None
        blocks = self.num_blocks + int(scratch_block)
        shape = (spec.num_layers, 2, spec.num_kv_heads, blocks, block_size, spec.head_dim)
        self.data = torch.zeros(shape, dtype=dtype, device=device)
        self.layers = [(self.data[i, 0], self.data[i, 1]) for i in range(spec.num_layers)]

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size
