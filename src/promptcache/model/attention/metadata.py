"""What a step's attention reads, one metadata type per backend.

Every backend's metadata says where each token's K/V goes in the block pool
(`slot_mapping`) and how many of the step's rows are decodes (they come first). Then:

- `TorchMetadata` (PyTorch's paths, and our CPU C kernel for decode rows): a slice per
  prefill chunk, and how the decode rows read their contexts, one of `GatheredDecode`
  (padded block tables, gathered, masked), `RunsDecode` (runs of the pool read in place)
  or `KernelDecode` (the C kernel reads each row's blocks in place);
- `TritonMetadata` (the Triton kernel): one launch's tables per group of rows (decode
  rows, then every prefill chunk).

The builders (`model.attention.torch_backend`, `model.attention.triton_backend`) make
them from a step's layout; `model.attention.paged.attend` runs the one a metadata's type
names.
"""

from __future__ import annotations

from dataclasses import dataclass

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
class GatheredDecode:
    """Decode rows over their contexts gathered through padded block tables and masked."""

    block_tables: torch.Tensor  # (Bd, max_blocks) int64
    mask: torch.Tensor  # (Bd, 1, 1, max_blocks * block_size) bool
    # Derived once per step by the first layer, reused by the others (and for K and V):
    rows: torch.Tensor | None = None  # gather rows of the tables
    hidden: torch.Tensor | None = None  # ~mask


@dataclass(slots=True)
class RunsDecode:
    """Each decode row over its context as runs of the pool, read in place."""

    runs: list[list[Run]]


@dataclass(slots=True)
class KernelDecode:
    """Decode rows by our C kernel: each over its first `context_lens` keys through its
    row of `block_tables`, read in place (no mask)."""

    block_tables: torch.Tensor  # (Bd, max_blocks) int64
    context_lens: torch.Tensor  # (Bd,) int64


DecodeReads = GatheredDecode | RunsDecode | KernelDecode


@dataclass(slots=True)
class AttentionMetadata:
    """What every backend's metadata has: the step's K/V slots and its decode rows."""

    slot_mapping: torch.Tensor  # (T,) int64
    num_decodes: int
    sliding_window: int | None


@dataclass(slots=True)
class TorchMetadata(AttentionMetadata):
    """PyTorch's paths (and the C kernel for decode rows): see the module docstring."""

    prefills: list[PrefillSlice]
    decode: DecodeReads | None = None  # None: the step has no decode rows


@dataclass(slots=True)
class TritonMetadata(AttentionMetadata):
    """The Triton kernel reads the pool in place, one launch per entry of `launches`."""

    launches: list[PagedTables]
