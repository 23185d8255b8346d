"""Run one scheduled step on the model: build the flat batch, forward, sample.

Lays out the batch as decode rows first, then one slice per prefill chunk (see
`promptcache.model.attention`). Computes logits only for rows that end a sequence's
known tokens, i.e. rows whose next token is sampled this step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from promptcache.engine.cuda_graphs import DecodeGraphs
from promptcache.engine.kv_cache import KVCache
from promptcache.engine.sampler import sample
from promptcache.engine.scheduler import ScheduledSeq
from promptcache.engine.sequence import Sequence
from promptcache.model.attention import (
    AttentionMetadata,
    PrefillSlice,
    causal_mask,
    decode_mask,
    reads_in_place,
)
from promptcache.model.llama import LlamaForCausalLM
from promptcache.model.paged_tables import (
    PREFILL_BLOCK_Q,
    PagedTables,
    build_tables,
)
from promptcache.model.pool_runs import Run, decode_runs
from promptcache.util import cdiv


@dataclass(slots=True)
class StepInputs:
    input_ids: torch.Tensor  # (T,)
    positions: torch.Tensor  # (T,)
    meta: AttentionMetadata
    sample_rows: list[int]  # rows whose logits are sampled
    sample_seqs: list[Sequence]


class ModelRunner:
    """Owns the model module and the KV cache tensors; stateless between steps."""

    def __init__(self, module: LlamaForCausalLM, kv_cache: KVCache, triton: bool = False) -> None:
        """`triton`: attention through the Triton kernel (`paged_tables.uses_triton`)."""
        self.module = module
        self.kv_cache = kv_cache
        self.device = kv_cache.data.device
        self.block_size = kv_cache.block_size
        self.sliding_window = module.spec.sliding_window
        self.triton = triton
        self.graphs: DecodeGraphs | None = None

    def use_graphs(self, max_batch: int, max_blocks: int, capture: bool = True) -> None:
        """Run decode-only steps of up to `max_batch` sequences (each of at most
        `max_blocks` blocks) over static buffers, replayed from CUDA graphs captured now
        (`capture`; else run eagerly over the same buffers, as the CPU tests do)."""
        assert self.triton, "static decode batches need the Triton attention"
        self.graphs = DecodeGraphs(self.module, self.kv_cache, max_batch, max_blocks, capture)

    @torch.inference_mode()
    def warm_up(self) -> None:
        """Run the prefill path once, one block of tokens into the scratch block, so that
        no request pays for compiling the kernels (Triton) or choosing them (cuBLAS)."""
        scratch = self.kv_cache.scratch_block
        if not self.triton or scratch is None:
            return
        n = self.block_size
        first = scratch * n
        tables = build_tables([[scratch]], [n], [0], [n], PREFILL_BLOCK_Q, self.device)
        meta = AttentionMetadata(
            slot_mapping=torch.arange(first, first + n, device=self.device),
            num_decodes=0,
            decode_block_tables=None,
            decode_mask=None,
            prefills=[],
            sliding_window=self.sliding_window,
            paged=[tables],
        )
        ids = torch.zeros(n, dtype=torch.int64, device=self.device)
        positions = torch.arange(n, device=self.device)
        hidden = self.module(ids, positions, self.kv_cache.layers, meta)
        self.module.compute_logits(hidden[-1:])

    @torch.inference_mode()
    def execute(self, scheduled: list[ScheduledSeq]) -> dict[int, int]:
        """Run the step; returns {id(seq): next token} for sequences that sample now."""
        seqs = [s.seq for s in scheduled]
        logits = self._replay(scheduled)
        if logits is None:
            inputs = self.prepare(scheduled)
            hidden = self.forward(inputs)  # writes the K/V of chunks that sample nothing
            if not inputs.sample_rows:
                return {}
            rows = torch.tensor(inputs.sample_rows, device=self.device)
            logits = self.module.compute_logits(hidden.index_select(0, rows))
            seqs = inputs.sample_seqs
        tokens = sample(logits, [s.params for s in seqs], [s.generator for s in seqs])
        return {id(s): t for s, t in zip(seqs, tokens, strict=True)}

    def _replay(self, scheduled: list[ScheduledSeq]) -> torch.Tensor | None:
        """Logits of a decode-only step from the static decode batch, in step order;
        None where the step is not one (prefill chunks, too many decodes, no graphs)."""
        graphs = self.graphs
        if graphs is None or not scheduled or len(scheduled) > graphs.max_batch:
            return None
        if not all(s.seq.is_decoding and s.num_tokens == 1 for s in scheduled):
            return None
        bs = self.block_size
        ids, positions, slots, tables = [], [], [], []
        for item in scheduled:
            seq, pos = item.seq, item.seq.num_computed
            ids.append(seq.tokens_slice(pos, pos + 1)[0])
            positions.append(pos)
            slots.append(seq.block_table[pos // bs] * bs + pos % bs)
            tables.append(seq.block_table[: pos // bs + 1])
        return graphs.run(ids, positions, slots, tables)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """Final hidden states (T, hidden) of every token in the step; writes their K/V."""
        return self.module(inputs.input_ids, inputs.positions, self.kv_cache.layers, inputs.meta)

    @torch.inference_mode()
    def all_logits(self, scheduled: list[ScheduledSeq]) -> torch.Tensor:
        """Logits (T, vocab) of every token in the step, in batch order (for checks)."""
        return self.module.compute_logits(self.forward(self.prepare(scheduled)))

    def prepare(self, scheduled: list[ScheduledSeq]) -> StepInputs:
        decodes = [s for s in scheduled if s.seq.is_decoding]
        prefills = [s for s in scheduled if not s.seq.is_decoding]
        ids: list[int] = []
        positions: list[int] = []
        sample_rows: list[int] = []
        sample_seqs: list[Sequence] = []
        for item in decodes + prefills:
            seq, start = item.seq, item.seq.num_computed
            ids.extend(seq.tokens_slice(start, start + item.num_tokens))
            positions.extend(range(start, start + item.num_tokens))
            if start + item.num_tokens == seq.num_tokens:
                sample_rows.append(len(ids) - 1)
                sample_seqs.append(seq)
        if self.triton:
            meta = AttentionMetadata(
                slot_mapping=self._slots(decodes + prefills),
                num_decodes=len(decodes),
                decode_block_tables=None,
                decode_mask=None,
                prefills=[],
                sliding_window=self.sliding_window,
                paged=self._paged_tables(decodes, prefills),
            )
        else:
            meta = self._torch_metadata(decodes, prefills)
        return StepInputs(
            input_ids=self._tensor(ids),
            positions=self._tensor(positions),
            meta=meta,
            sample_rows=sample_rows,
            sample_seqs=sample_seqs,
        )

    def _torch_metadata(
        self, decodes: list[ScheduledSeq], prefills: list[ScheduledSeq]
    ) -> AttentionMetadata:
        meta = AttentionMetadata(
            slot_mapping=self._slots(decodes + prefills),
            num_decodes=len(decodes),
            decode_block_tables=None,
            decode_mask=None,
            sliding_window=self.sliding_window,
            prefills=self._prefill_slices(prefills, start_row=len(decodes)),
        )
        if decodes:
            ctx = [i.seq.num_computed + 1 for i in decodes]  # keys each decode attends to
            meta.decode_runs = self._decode_runs(decodes, ctx)
            if meta.decode_runs is None:
                meta.decode_block_tables, meta.decode_mask = self._decode_tables(decodes, ctx)
        return meta

    def _paged_tables(
        self, decodes: list[ScheduledSeq], prefills: list[ScheduledSeq]
    ) -> list[PagedTables]:
        """The Triton kernel's tables: one launch for the decode rows (a query a tile),
        one for every prefill chunk together."""
        out = []
        row = 0
        for items, block_q in ((decodes, 1), (prefills, PREFILL_BLOCK_Q)):
            if not items:
                continue
            ctx = [i.seq.num_computed + i.num_tokens for i in items]
            qlens = [i.num_tokens for i in items]
            starts = [row + sum(qlens[:k]) for k in range(len(items))]
            row += sum(qlens)
            tables = [
                i.seq.block_table[: cdiv(c, self.block_size)]
                for i, c in zip(items, ctx, strict=True)
            ]
            out.append(build_tables(tables, ctx, starts, qlens, block_q, self.device))
        return out

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=self.device)

    def _slots(self, items: list[ScheduledSeq]) -> torch.Tensor:
        bs = self.block_size
        slots: list[int] = []
        for item in items:
            table, start = item.seq.block_table, item.seq.num_computed
            slots.extend(
                table[p // bs] * bs + p % bs for p in range(start, start + item.num_tokens)
            )
        return self._tensor(slots)

    def _prefill_slices(self, items: list[ScheduledSeq], start_row: int) -> list[PrefillSlice]:
        slices = []
        row = start_row
        for item in items:
            ctx = item.seq.num_computed + item.num_tokens
            n_blocks = cdiv(ctx, self.block_size)
            slices.append(
                PrefillSlice(
                    query_start=row,
                    query_len=item.num_tokens,
                    context_len=ctx,
                    block_ids=self._tensor(item.seq.block_table[:n_blocks]),
                    mask=causal_mask(item.num_tokens, ctx, self.sliding_window, self.device),
                )
            )
            row += item.num_tokens
        return slices

    def _decode_runs(self, items: list[ScheduledSeq], ctx: list[int]) -> list[list[Run]] | None:
        """Each decode's context (`ctx` keys) as runs of the pool where this step reads
        them in place; None (gathered) where the dtype or lengths do not call for it, a
        sliding window leaves keys out, or a context is too scattered."""
        dtype = self.kv_cache.data.dtype
        if self.sliding_window is not None or not reads_in_place(dtype, self.device, ctx):
            return None
        out = []
        for i, n in zip(items, ctx, strict=True):
            runs = decode_runs(i.seq.block_table, n, self.block_size)
            if runs is None:
                return None
            out.append(runs)
        return out

    def _decode_tables(
        self, items: list[ScheduledSeq], ctx: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(cdiv(c, self.block_size) for c in ctx)
        # Pad with block 0: its contents are finite and masked out.
        tables = [
            i.seq.block_table[:width] + [0] * (width - len(i.seq.block_table[:width]))
            for i in items
        ]
        table_t = self._tensor([b for t in tables for b in t]).view(len(items), width)
        mask = decode_mask(self._tensor(ctx), width * self.block_size, self.sliding_window)
        return table_t, mask
