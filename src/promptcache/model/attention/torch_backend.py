"""The builder of PyTorch's attention paths, on any device, and of the CPU backend that
hands decode rows to our C kernel (`model.kernels.decode_attention`).

Prefill chunks get a slice each (their rows, context and blocks; a causal mask where the
chunk sees less than its whole context). Decode rows read their contexts one of three
ways: through the C kernel (the CPU backend), in place as runs of the pool where this
step's dtype and lengths call for it (`paged.reads_in_place`), else gathered through
padded block tables and masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from promptcache.model.attention.backend import SeqChunk, StepLayout, StepTensors
from promptcache.model.attention.metadata import (
    DecodeReads,
    GatheredDecode,
    KernelDecode,
    PrefillSlice,
    RunsDecode,
    TorchMetadata,
)
from promptcache.model.attention.paged import causal_mask, decode_mask, reads_in_place
from promptcache.model.attention.pool_runs import Run, decode_runs
from promptcache.util import cdiv


@dataclass(slots=True)
class TorchBackend:
    """PyTorch's paths over a pool of `block_size`-token blocks of `dtype` on `device`."""

    device: torch.device
    dtype: torch.dtype
    block_size: int
    sliding_window: int | None
    name = "torch"

    def build(self, step: StepLayout) -> StepTensors:
        meta = TorchMetadata(
            slot_mapping=self._tensor(step.slots(self.block_size)),
            num_decodes=len(step.decodes),
            sliding_window=self.sliding_window,
            prefills=self._prefill_slices(step.prefills, start_row=len(step.decodes)),
            decode=self._decode(step.decodes) if step.decodes else None,
        )
        return StepTensors(self._tensor(step.input_ids), self._tensor(step.positions), meta)

    def _decode(self, decodes: list[SeqChunk]) -> DecodeReads:
        ctx = [c.context_len for c in decodes]
        runs = self._runs(decodes, ctx)
        if runs is not None:
            return RunsDecode(runs)
        tables = self._padded_tables(decodes, ctx)
        width = tables.shape[1] * self.block_size
        return GatheredDecode(tables, decode_mask(self._tensor(ctx), width, self.sliding_window))

    def _runs(self, decodes: list[SeqChunk], ctx: list[int]) -> list[list[Run]] | None:
        """Each decode's context as runs of the pool where this step reads them in place;
        None (gathered) where the dtype or lengths do not call for it, a sliding window
        leaves keys out, or a context is too scattered."""
        if self.sliding_window is not None or not reads_in_place(self.dtype, self.device, ctx):
            return None
        out = []
        for c, n in zip(decodes, ctx, strict=True):
            runs = decode_runs(c.block_table, n, self.block_size)
            if runs is None:
                return None
            out.append(runs)
        return out

    def _prefill_slices(self, chunks: list[SeqChunk], start_row: int) -> list[PrefillSlice]:
        slices, row = [], start_row
        for c in chunks:
            ctx = c.context_len
            slices.append(
                PrefillSlice(
                    query_start=row,
                    query_len=c.num_tokens,
                    context_len=ctx,
                    block_ids=self._tensor(c.block_table[: cdiv(ctx, self.block_size)]),
                    mask=causal_mask(c.num_tokens, ctx, self.sliding_window, self.device),
                )
            )
            row += c.num_tokens
        return slices

    def _padded_tables(self, chunks: list[SeqChunk], ctx: list[int]) -> torch.Tensor:
        """(B, W) int64: each sequence's blocks covering its `ctx` keys, padded with
        block 0 (its contents are finite, and masked out or never read)."""
        width = max(cdiv(c, self.block_size) for c in ctx)
        rows = [c.block_table[:width] + [0] * (width - len(c.block_table[:width])) for c in chunks]
        return self._tensor([b for r in rows for b in r]).view(len(chunks), width)

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=self.device)


@dataclass(slots=True)
class CpuKernelBackend(TorchBackend):
    """PyTorch's paths for prefill chunks, our C kernel for decode rows (CPU)."""

    name = "cpu"

    def _decode(self, decodes: list[SeqChunk]) -> DecodeReads:
        ctx = [c.context_len for c in decodes]
        return KernelDecode(self._padded_tables(decodes, ctx), self._tensor(ctx))
