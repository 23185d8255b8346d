"""What a step's attention reads: where each token's K/V goes in the block pool and what
each token attends to, for every backend (`model.attention.selector` says which runs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from promptcache.model.attention.paged_tables import PagedTables
from promptcache.model.attention.pool_runs import Run


@dataclass(slots=True)
class PrefillSlice:
    """One sequence's prefill chunk inside the flat batch."""

    query_start: int
    query_len: int
    context_len: int  # tokens in KV once this chunk is written (cached + chunk)
    block_ids: torch.Tensor  # (n_blocks,) int64, covers context_len
    mask: torch.Tensor | None  # (1, 1, q_len, context_len) bool, None = plain causal
    rows: torch.Tensor | None = None  # gather rows of block_ids (set by the first layer)


@dataclass(slots=True)
class AttentionMetadata:
    """Where the batch's tokens go in the block pool and what each of them attends to."""

    slot_mapping: torch.Tensor  # (T,) int64
    num_decodes: int
    decode_block_tables: torch.Tensor | None  # (Bd, max_blocks) int64
    decode_mask: torch.Tensor | None  # (Bd, 1, 1, max_blocks * block_size) bool
    prefills: list[PrefillSlice]
    sliding_window: int | None = None
    decode_runs: list[list[Run]] | None = None  # set: decode reads these runs in place
    decode_context_lens: torch.Tensor | None = None  # set: decode rows by the C kernel,
    # each over its first keys through its row of decode_block_tables (no mask, in place)
    paged: list[PagedTables] | None = None  # set: the Triton kernel reads the pool, one
    # launch per entry (decode rows, then all prefill chunks), and the fields above go unused
    # Derived once per step by the first layer, reused by the others (and for K and V):
    decode_rows: torch.Tensor | None = field(default=None)  # gather rows of the tables
    decode_hidden: torch.Tensor | None = field(default=None)  # ~decode_mask
