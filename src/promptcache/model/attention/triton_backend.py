"""The builder of the Triton kernel's metadata (`model.attention.triton_kernel`).

The kernel reads each sequence's block table through a row of tables kept on the device
between steps (`DeviceBlockTables`), so a step moves only what changed. Its inputs move in
one copy (`pack`): token ids, positions, slots, then per launch (decode rows, then every
prefill chunk) each sequence's table row, context, first row and query count, and the
tile maps.
"""

from __future__ import annotations

import itertools

import torch

from promptcache.model.attention.backend import SeqChunk, StepLayout, StepTensors
from promptcache.model.attention.device_tables import DeviceBlockTables, pack
from promptcache.model.attention.metadata import TritonMetadata
from promptcache.model.attention.paged_tables import PREFILL_BLOCK_Q, PagedTables, tiles_for
from promptcache.util import cdiv

LAUNCH_LISTS = 6  # a launch's lists: rows, contexts, starts, query counts, tile maps (2)


class TritonBackend:
    """The Triton kernel over a pool of `block_size`-token blocks on `device`, with device
    tables for up to `max_seqs` sequences of at most `max_tokens` tokens."""

    name = "triton"

    def __init__(
        self,
        device: torch.device,
        block_size: int,
        sliding_window: int | None,
        max_seqs: int,
        max_tokens: int,
    ) -> None:
        self.device = device
        self.block_size = block_size
        self.sliding_window = sliding_window
        self.tables = DeviceBlockTables(max_seqs, cdiv(max_tokens, block_size), device)

    def build(self, step: StepLayout) -> StepTensors:
        chunks = step.decodes + step.prefills
        lists = [step.input_ids, step.positions, step.slots(self.block_size)]
        # one call for the whole step, so that no sequence of it takes another's row
        all_rows = self.tables.rows([(c.key, c.block_table) for c in chunks])
        launches: list[tuple[int, int]] = []  # (its first list's index, query tile)
        row = 0
        groups: tuple[tuple[list[SeqChunk], list[int], int], ...] = (
            (step.decodes, all_rows[: len(step.decodes)], 1),
            (step.prefills, all_rows[len(step.decodes) :], PREFILL_BLOCK_Q),
        )
        for items, rows, block_q in groups:
            if not items:
                continue
            qlens = [c.num_tokens for c in items]
            starts = list(itertools.accumulate(qlens, initial=row))[:-1]
            row += sum(qlens)
            ctx = [c.context_len for c in items]
            launches.append((len(lists), block_q))
            lists += [rows, ctx, starts, qlens, *tiles_for(qlens, block_q)]
        moved = pack(lists, self.device)
        ids, positions, slots = moved[:3]
        tables = [self._launch(moved[i : i + LAUNCH_LISTS], bq) for i, bq in launches]
        meta = TritonMetadata(slots, len(step.decodes), self.sliding_window, tables)
        return StepTensors(ids, positions, meta)

    def _launch(self, t: list[torch.Tensor], block_q: int) -> PagedTables:
        """A launch's tables from its moved lists: rows, contexts, starts, query counts,
        tile sequences and offsets."""
        return PagedTables(self.tables.table, t[0], t[1], t[2], t[3], t[4], t[5], block_q)
