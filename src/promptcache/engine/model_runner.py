"""Run one scheduled step on the model: build the flat batch, forward, sample.

Lays out the batch as decode rows first, then one slice per prefill chunk (see
`promptcache.model.attention.paged`). Computes logits only for rows that end a sequence's
known tokens, i.e. rows whose next token is sampled this step.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch

from promptcache.engine.cpu_step import DecodeStep
from promptcache.engine.cuda_graphs import DecodeGraphs
from promptcache.engine.device_tables import DeviceBlockTables, pack
from promptcache.engine.kv_cache import KVCache
from promptcache.engine.sampler import sample
from promptcache.engine.scheduler import ScheduledSeq
from promptcache.engine.sequence import Sequence
from promptcache.model.attention.metadata import AttentionMetadata, PrefillSlice
from promptcache.model.attention.paged import causal_mask, decode_mask, reads_in_place
from promptcache.model.attention.paged_tables import (
    PREFILL_BLOCK_Q,
    PagedTables,
    build_tables,
    tiles_for,
)
from promptcache.model.attention.pool_runs import Run, decode_runs
from promptcache.model.llama import LlamaForCausalLM
from promptcache.util import cdiv

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StepInputs:
    input_ids: torch.Tensor  # (T,)
    positions: torch.Tensor  # (T,)
    meta: AttentionMetadata
    sample_rows: list[int]  # rows whose logits are sampled
    sample_seqs: list[Sequence]


class ModelRunner:
    """Owns the model module and the KV cache tensors; stateless between steps."""

    def __init__(
        self,
        module: LlamaForCausalLM,
        kv_cache: KVCache,
        triton: bool = False,
        max_num_seqs: int = 16,
        max_model_len: int | None = None,
        cpu_decode: bool = False,
    ) -> None:
        """`triton`: attention through the Triton kernel (`selector.uses_triton`),
        which reads block tables kept on the device for up to twice `max_num_seqs`
        sequences of at most `max_model_len` tokens (default: the model's context).
        `cpu_decode`: decode rows through the C kernel (`selector.uses_cpu_decode`), and a
        4-bit model's decode-only steps through the one-call step (`cpu_step`) where it fits.
        The step executors (that one, CUDA graphs) are the runner's, not the model's."""
        self.module = module
        self.kv_cache = kv_cache
        self.device = kv_cache.data.device
        self.block_size = kv_cache.block_size
        self.sliding_window = module.spec.sliding_window
        self.triton = triton
        self.cpu_decode = cpu_decode
        self.tables: DeviceBlockTables | None = None
        if triton:
            tokens = max_model_len or module.spec.max_position_embeddings
            width = cdiv(tokens, self.block_size)
            self.tables = DeviceBlockTables(2 * max_num_seqs, width, self.device)
        self.graphs: DecodeGraphs | None = None
        self.cpu_step = DecodeStep.build(module) if cpu_decode else None
        if self.cpu_step is not None:
            log.info("4-bit decode steps: all layers in one C call (csrc/decode_step.c)")

    def use_graphs(self, max_batch: int, capture: bool = True) -> None:
        """Run decode-only steps of up to `max_batch` sequences over static buffers,
        replayed from CUDA graphs captured now (`capture`; else run eagerly over the same
        buffers, as the CPU tests do)."""
        assert self.tables is not None, "static decode batches need the Triton attention"
        self.graphs = DecodeGraphs(self.module, self.kv_cache, self.tables, max_batch, capture)

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
        logits = self._replay(scheduled)
        if logits is not None:  # a replayed step samples every row, in step order
            seqs = [s.seq for s in scheduled]
        else:
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
        assert self.tables is not None
        bs = self.block_size
        ids, positions, slots = [], [], []
        for item in scheduled:
            seq, pos = item.seq, item.seq.num_computed
            ids.append(seq.tokens_slice(pos, pos + 1)[0])
            positions.append(pos)
            slots.append(seq.block_table[pos // bs] * bs + pos % bs)
        rows = self.tables.rows([(id(s.seq), s.seq.block_table) for s in scheduled])
        return graphs.run(ids, positions, slots, rows)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """Final hidden states (T, hidden) of every token in the step; writes their K/V."""
        step = self.cpu_step
        if step is not None and step.serves(inputs.input_ids, inputs.meta):
            return step.run(inputs.input_ids, inputs.positions, self.kv_cache.layers, inputs.meta)
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
            return self._triton_inputs(decodes, prefills, ids, positions, sample_rows, sample_seqs)
        return StepInputs(
            input_ids=self._tensor(ids),
            positions=self._tensor(positions),
            meta=self._torch_metadata(decodes, prefills),
            sample_rows=sample_rows,
            sample_seqs=sample_seqs,
        )

    def _triton_inputs(
        self,
        decodes: list[ScheduledSeq],
        prefills: list[ScheduledSeq],
        ids: list[int],
        positions: list[int],
        sample_rows: list[int],
        sample_seqs: list[Sequence],
    ) -> StepInputs:
        """The step's inputs for the Triton kernel, moved to the device in one copy: ids,
        positions, slots, then per launch (decode rows, then every prefill chunk) each
        sequence's table row, context, first row and query count, and the tile maps."""
        assert self.tables is not None
        lists = [ids, positions, self._slot_list(decodes + prefills)]
        # one call for the whole step, so that no sequence of it takes another's row
        all_rows = self.tables.rows([(id(i.seq), i.seq.block_table) for i in decodes + prefills])
        launches = []
        row = 0
        for items, block_q in ((decodes, 1), (prefills, PREFILL_BLOCK_Q)):
            if not items:
                continue
            qlens = [i.num_tokens for i in items]
            starts = list(itertools.accumulate(qlens, initial=row))[:-1]
            rows = all_rows[: len(items)] if items is decodes else all_rows[len(decodes) :]
            row += sum(qlens)
            ctx = [i.seq.num_computed + i.num_tokens for i in items]
            lists += [rows, ctx, starts, qlens, *tiles_for(qlens, block_q)]
            launches.append(block_q)
        moved = pack(lists, self.device)
        paged = [self._launch(moved[3 + 6 * k : 9 + 6 * k], bq) for k, bq in enumerate(launches)]
        meta = AttentionMetadata(
            slot_mapping=moved[2],
            num_decodes=len(decodes),
            decode_block_tables=None,
            decode_mask=None,
            prefills=[],
            sliding_window=self.sliding_window,
            paged=paged,
        )
        return StepInputs(moved[0], moved[1], meta, sample_rows, sample_seqs)

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
        if not decodes:
            return meta
        ctx = [i.seq.num_computed + 1 for i in decodes]  # keys each decode attends to
        if self.cpu_decode:
            meta.decode_block_tables = self._padded_tables(decodes, ctx)
            meta.decode_context_lens = self._tensor(ctx)
            return meta
        meta.decode_runs = self._decode_runs(decodes, ctx)
        if meta.decode_runs is None:
            meta.decode_block_tables, meta.decode_mask = self._decode_tables(decodes, ctx)
        return meta

    def _launch(self, t: list[torch.Tensor], block_q: int) -> PagedTables:
        """A launch's tables from its moved lists: rows, contexts, starts, query counts,
        tile sequences and offsets."""
        assert self.tables is not None
        return PagedTables(self.tables.table, t[0], t[1], t[2], t[3], t[4], t[5], block_q)

    def _tensor(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=self.device)

    def _slots(self, items: list[ScheduledSeq]) -> torch.Tensor:
        return self._tensor(self._slot_list(items))

    def _slot_list(self, items: list[ScheduledSeq]) -> list[int]:
        bs = self.block_size
        slots: list[int] = []
        for item in items:
            table, start = item.seq.block_table, item.seq.num_computed
            slots.extend(
                table[p // bs] * bs + p % bs for p in range(start, start + item.num_tokens)
            )
        return slots

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
        table_t = self._padded_tables(items, ctx)
        width = table_t.shape[1]
        mask = decode_mask(self._tensor(ctx), width * self.block_size, self.sliding_window)
        return table_t, mask

    def _padded_tables(self, items: list[ScheduledSeq], ctx: list[int]) -> torch.Tensor:
        """(B, W) int64: each sequence's blocks covering its `ctx` keys, padded with
        block 0 (its contents are finite, and masked out or never read)."""
        width = max(cdiv(c, self.block_size) for c in ctx)
        tables = [
            i.seq.block_table[:width] + [0] * (width - len(i.seq.block_table[:width]))
            for i in items
        ]
        return self._tensor([b for t in tables for b in t]).view(len(items), width)
