"""Attention that reads keys and values where they lie in the block pool, without a gather.

Gathering a sequence's blocks copies its whole context once per layer for K and once for
V: at 4.6k tokens that is 3.5 MB a layer, more than the attention itself reads. But a
sequence's blocks mostly lie in a few runs of consecutive ids (a fresh pool hands ids out
in order; freed blocks return last-first, so a later sequence gets descending runs), and
a run of blocks is one strided view of the pool, (KV, n * block_size, hd), that a matmul
reads in place.

A decoding query sees every key of its context, and keys may be visited in any order
(attention is a sum over keys), so the blocks are sorted by id and merged into runs; the
last block, partly filled, adds only its valid slots:

    decode:   [run][run][run]     every key visible, no mask, no copy

Each piece runs through PyTorch's CPU flash kernel, which reads the strided views as they
are, with a query head group (the heads that share a KV head) as its "queries", and the
pieces are joined by their log-sum-exps; without that kernel (absent from some builds),
the scores of the pieces are joined for one softmax and each piece's probabilities times
its values summed. Worth it where the gather's copy and fixed costs exceed the strided
reads: one decode over a short context, float32 over long contexts (see
`promptcache.model.attention.paged`). This module knows nothing about scheduling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# PyTorch's CPU flash kernel that also returns each query's log-sum-exp (private, absent
# from some builds: then pieces are attended by matmuls).
FLASH_WITH_LSE = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)

# Beyond this many runs in a sequence the calls per piece cost more than one gather.
MAX_RUNS = 8


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive slots of the pool (slot = block_id * block_size + offset)."""

    start: int
    length: int


def block_runs(block_ids: Sequence[int], block_size: int) -> list[Run]:
    """Full blocks, in id order, merged into runs of consecutive ids."""
    runs: list[Run] = []
    first = prev = -2
    for b in sorted(block_ids):
        if b != prev + 1:
            if prev >= 0:
                runs.append(Run(first * block_size, (prev - first + 1) * block_size))
            first = b
        prev = b
    if prev >= 0:
        runs.append(Run(first * block_size, (prev - first + 1) * block_size))
    return runs


def decode_runs(table: Sequence[int], context_len: int, block_size: int) -> list[Run] | None:
    """Runs covering a decoding sequence's `context_len` keys (its table's first blocks),
    or None when they are too scattered to read in place."""
    n = -(-context_len // block_size)
    last_valid = context_len - (n - 1) * block_size
    full = table[: n - 1] if last_valid < block_size else table[:n]
    runs = block_runs(full, block_size)
    if last_valid < block_size:
        runs = _append_partial(runs, table[n - 1] * block_size, last_valid)
    return runs if len(runs) <= MAX_RUNS else None


def _append_partial(runs: list[Run], start: int, length: int) -> list[Run]:
    """Add a block's first `length` slots, joined to the run that ends just before it."""
    for i, r in enumerate(runs):
        if r.start + r.length == start:
            runs[i] = Run(r.start, r.length + length)
            return runs
    return [*runs, Run(start, length)]


def run_views(cache: torch.Tensor, runs: list[Run]) -> list[torch.Tensor]:
    """(KV, num_blocks, bs, hd) pool -> one (KV, length, hd) view per run, no copy."""
    kv, hd = cache.shape[0], cache.shape[3]
    flat = cache.view(kv, -1, hd)
    return [flat[:, r.start : r.start + r.length] for r in runs]


def attend_pieces(
    qg: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]
) -> torch.Tensor:
    """qg (KV, M, hd), already scaled, over key/value pieces (KV, n_i, hd), every key
    visible -> (KV, M, hd). Scores stay in q's dtype, as in transformers' eager attention;
    softmax accumulates in float32."""
    scores = [torch.matmul(qg, k.transpose(1, 2)) for k in keys]
    probs = torch.softmax(scores[0] if len(scores) == 1 else torch.cat(scores, -1), dim=-1)
    out: torch.Tensor | None = None
    offset = 0
    for v in values:
        part = torch.matmul(probs[..., offset : offset + v.shape[1]], v)
        out = part if out is None else out.add_(part)
        offset += v.shape[1]
    assert out is not None
    return out


def flash_pieces(
    qg: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]
) -> torch.Tensor:
    """qg (KV, G, hd), unscaled, over key/value pieces (KV, n_i, hd), every key visible
    -> (KV, G, hd): one flash call a piece (the G heads of a group as its queries), joined
    by the pieces' log-sum-exps in float32."""
    assert FLASH_WITH_LSE is not None
    q = qg.unsqueeze(0)
    pairs = zip(keys, values, strict=True)
    parts = [FLASH_WITH_LSE(q, k.unsqueeze(0), v.unsqueeze(0)) for k, v in pairs]
    if len(parts) == 1:
        return parts[0][0][0]
    lse = torch.stack([p[1][0] for p in parts])  # (R, KV, G) float32
    weights = torch.softmax(lse, dim=0).unsqueeze(-1)
    outs = torch.stack([p[0][0].float() for p in parts])  # (R, KV, G, hd)
    return (outs * weights).sum(0).to(qg.dtype)
