"""The tables the Triton paged-attention kernel reads, and where our kernels are used.

Kept free of Triton so that the engine can build the tables and choose the attention
backend on machines without it. `EngineConfig.attention_backend` names the choice:

- "auto" (default): on CUDA the Triton kernel where Triton imports and the model's head
  size (a power of 2, at least 16) and the block size (a power of 2) suit it; on CPU the
  C decode kernel (`promptcache.model.cpu_decode`) for decode rows where it builds
  (float32 or bfloat16, no sliding window), PyTorch's paths for the rest;
- "torch": PyTorch's paths (gather, then SDPA or matmuls) on any device;
- "triton": the Triton kernel, or an error where it cannot run.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch

from promptcache.model.spec import ModelSpec
from promptcache.util import ATTENTION_BACKENDS

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


def kernel_fits(head_dim: int, block_size: int) -> bool:
    """The kernel's tiles need a power-of-two head size of at least 16 (a tensor-core
    dot's depth) and a power-of-two block size."""
    powers = all(n >= 1 and n & (n - 1) == 0 for n in (head_dim, block_size))
    return powers and head_dim >= 16


def uses_cpu_decode(
    backend: str, device: torch.device, dtype: torch.dtype, spec: ModelSpec
) -> bool:
    """Whether CPU decode rows go through the C kernel (see the module docstring)."""
    if backend != "auto" or device.type != "cpu" or spec.sliding_window is not None:
        return False
    from promptcache.model import cpu_decode

    return cpu_decode.supports(dtype, spec.num_heads, spec.num_kv_heads, spec.head_dim)


def uses_triton(backend: str, device: torch.device, head_dim: int, block_size: int) -> bool:
    """Whether attention runs through the Triton kernel (see the module docstring);
    ValueError where "triton" is asked for and cannot run."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(
            f"attention_backend must be one of {', '.join(ATTENTION_BACKENDS)}, got {backend!r}"
        )
    if backend == "torch":
        return False
    fits = kernel_fits(head_dim, block_size)
    has_triton = importlib.util.find_spec("triton") is not None
    # Off CUDA the kernel runs only under Triton's interpreter (the tests).
    runs_here = device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "auto":
        return device.type == "cuda" and fits and has_triton
    problems = [
        *([] if has_triton else ["Triton is not installed"]),
        *([] if runs_here else [f"it needs a CUDA device, not {device.type}"]),
        *(
            []
            if fits
            else [
                f"head size {head_dim} must be a power of 2 >= 16, "
                f"block size {block_size} a power of 2"
            ]
        ),
    ]
    if problems:
        raise ValueError("attention_backend 'triton' cannot run: " + "; ".join(problems))
    return True
