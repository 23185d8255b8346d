"""The tables the Triton paged-attention kernel (`model.attention.triton_kernel`) reads.

Kept free of Triton so that the engine can build the tables on machines without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Query tokens per prefill tile of the kernel; decode tiles hold one.
PREFILL_BLOCK_Q = 16


@dataclass(slots=True)
class PagedTables:
    """Where each sequence of the step lies in the flat batch and in the pool (integer
    tensors on the batch's device); the tile maps list each program's sequence and first
    query. Sequence i's blocks are row `table_rows[i]` of `block_tables`, which may hold
    the rows of other sequences too (the engine keeps them there between steps)."""

    block_tables: torch.Tensor  # (rows, W) int32 block ids
    table_rows: torch.Tensor  # (B,): each sequence's row of block_tables
    context_lens: torch.Tensor  # (B,): keys in the pool once this step's are written
    query_starts: torch.Tensor  # (B,): row of the sequence's first query in the batch
    query_lens: torch.Tensor  # (B,)
    tile_seqs: torch.Tensor  # (tiles,)
    tile_offsets: torch.Tensor  # (tiles,): first query of the tile within its sequence
    block_q: int  # queries per tile


def tiles_for(query_lens: list[int], block_q: int) -> tuple[list[int], list[int]]:
    """Each sequence's queries cut into tiles of `block_q`: (sequence, first query) each."""
    seqs: list[int] = []
    offsets: list[int] = []
    for i, n in enumerate(query_lens):
        for off in range(0, n, block_q):
            seqs.append(i)
            offsets.append(off)
    return seqs, offsets


def build_tables(
    tables: list[list[int]],
    context_lens: list[int],
    query_starts: list[int],
    query_lens: list[int],
    block_q: int,
    device: torch.device,
) -> PagedTables:
    """PagedTables from per-sequence lists, a fresh table of their own; block tables
    padded with block 0 to the longest (the kernel never reads past a context)."""
    width = max(len(t) for t in tables)
    padded = [t + [0] * (width - len(t)) for t in tables]
    seqs, offsets = tiles_for(query_lens, block_q)

    def tensor(values: list[int] | list[list[int]]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int32).to(device, non_blocking=True)

    return PagedTables(
        block_tables=tensor(padded),
        table_rows=tensor(list(range(len(tables)))),
        context_lens=tensor(context_lens),
        query_starts=tensor(query_starts),
        query_lens=tensor(query_lens),
        tile_seqs=tensor(seqs),
        tile_offsets=tensor(offsets),
        block_q=block_q,
    )
