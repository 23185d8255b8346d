"""Decode steps replayed from CUDA graphs: one launch of the whole forward, no Python.

A decode step runs hundreds of small kernels; launched one by one from Python they cost
more host time than the GPU spends on them. At start, for each batch size of a ladder
(1, 2, 4, 8, 16, 24, ... up to `max_num_seqs`), the decode forward and the LM head are
captured once over static input buffers; a decode-only step then copies its inputs into
those buffers and replays the smallest graph that holds its batch:

    rows 0..n-1:  the step's decodes (ids, positions, slots, rows of the block tables
                  the runner keeps on the device, context lengths)
    rows n..b-1:  padding: context 0 (the kernel gives zeros), K/V written to a scratch
                  block outside the pool, logits ignored

Steps with prefill chunks, or more decodes than the largest graph, run eagerly. Needs
attention that reads static tables (the Triton kernel); the runner builds this only on
CUDA with that kernel. Off CUDA (the tests) the same static buffers run eagerly, so every
part but the capture itself is exercised there.
"""

from __future__ import annotations

import torch

from promptcache.engine.kv_cache import KVCache
from promptcache.model.attention.device_tables import DeviceBlockTables, pack
from promptcache.model.attention.metadata import TritonMetadata
from promptcache.model.attention.paged_tables import PagedTables
from promptcache.model.llama import LlamaForCausalLM


def capture_sizes(max_batch: int) -> list[int]:
    """The ladder of captured batch sizes: 1, 2, 4, then every multiple of 8, and
    `max_batch` itself."""
    sizes = [b for b in (1, 2, 4) if b < max_batch] + list(range(8, max_batch, 8))
    return [*sizes, max_batch]


class DecodeGraphs:
    """Static buffers for up to `max_batch` decodes, and a graph per ladder size."""

    def __init__(
        self,
        module: LlamaForCausalLM,
        kv_cache: KVCache,
        tables: DeviceBlockTables,
        max_batch: int,
        capture: bool,
    ) -> None:
        """`tables`: the runner's block tables on the device (the graphs read them in
        place); `capture`: record CUDA graphs (else `run` runs the forward eagerly over
        the buffers)."""
        assert kv_cache.scratch_block is not None, "padding rows need a scratch block"
        self.module, self.kv_cache, self.tables = module, kv_cache, tables
        self.sizes = capture_sizes(max_batch)
        self.max_batch = max_batch
        dev = kv_cache.data.device
        self.scratch_slot = kv_cache.scratch_block * kv_cache.block_size

        def zeros() -> torch.Tensor:
            return torch.zeros(max_batch, dtype=torch.int64, device=dev)

        self.input_ids, self.positions, self.context_lens = zeros(), zeros(), zeros()
        self.table_rows, self.tile_offsets = zeros(), zeros()
        self.slots = torch.full((max_batch,), self.scratch_slot, dtype=torch.int64, device=dev)
        self.rows = torch.arange(max_batch, device=dev)
        self.ones = torch.ones(max_batch, dtype=torch.int64, device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        if capture:
            self._capture_all()

    def bucket(self, n: int) -> int | None:
        """The smallest captured size that holds `n` decodes (None: too many)."""
        return next((b for b in self.sizes if b >= n), None)

    @torch.inference_mode()
    def run(
        self, input_ids: list[int], positions: list[int], slots: list[int], rows: list[int]
    ) -> torch.Tensor:
        """Logits (n, vocab) of n decodes: each a token, its position, its K/V slot and
        its row of the block tables (covering position + 1 keys)."""
        n = len(input_ids)
        b = self.bucket(n)
        assert b is not None, f"{n} decodes exceed the largest graph ({self.max_batch})"
        self._fill(pack([input_ids, positions, slots, rows], self.input_ids.device), b)
        graph = self.graphs.get(b)
        if graph is None:
            return self._forward(b)[:n]
        graph.replay()
        return self.logits[b][:n]

    def _fill(self, moved: list[torch.Tensor], b: int) -> None:
        """Rows 0..n-1 from the step; padding rows n..b-1 attend to nothing and write
        their K/V into the scratch block."""
        ids, positions, slots, rows = moved
        n = ids.shape[0]
        self.input_ids[:n].copy_(ids)
        self.positions[:n].copy_(positions)
        torch.add(positions, 1, out=self.context_lens[:n])
        self.slots[:n].copy_(slots)
        self.table_rows[:n].copy_(rows)
        self.input_ids[n:b].zero_()
        self.positions[n:b].zero_()
        self.context_lens[n:b].zero_()
        self.slots[n:b].fill_(self.scratch_slot)
        self.table_rows[n:b].zero_()

    def _forward(self, b: int) -> torch.Tensor:
        """Logits (b, vocab) of the first b buffer rows, by the eager forward."""
        tables = PagedTables(
            block_tables=self.tables.table,
            table_rows=self.table_rows[:b],
            context_lens=self.context_lens[:b],
            query_starts=self.rows[:b],
            query_lens=self.ones[:b],
            tile_seqs=self.rows[:b],
            tile_offsets=self.tile_offsets[:b],
            block_q=1,
        )
        meta = TritonMetadata(self.slots[:b], b, self.module.spec.sliding_window, [tables])
        hidden = self.module(self.input_ids[:b], self.positions[:b], self.kv_cache.layers, meta)
        return self.module.compute_logits(hidden)

    def _capture_all(self) -> None:
        """Largest first, all graphs sharing one memory pool; each size is run eagerly
        once first (Triton compiles, cuBLAS picks its kernels)."""
        pool = torch.cuda.graph_pool_handle()
        with torch.inference_mode():
            for b in sorted(self.sizes, reverse=True):
                self._forward(b)
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self.logits[b] = self._forward(b)
                self.graphs[b] = graph
        torch.cuda.synchronize()
