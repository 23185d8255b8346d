"""Decode steps replayed from CUDA graphs: one launch of the whole forward, no Python.

A decode step runs hundreds of small kernels; launched one by one from Python they cost
more host time than the GPU spends on them. At start, for each batch size of a ladder
(1, 2, 4, 8, 16, 24, ... up to `max_num_seqs`), the decode forward and the LM head are
captured once over static input buffers; a decode-only step then copies its inputs into
those buffers and replays the smallest graph that holds its batch:

    rows 0..n-1:  the step's decodes (ids, positions, slots, block tables, context lengths)
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
from promptcache.model.attention import AttentionMetadata
from promptcache.model.llama import LlamaForCausalLM
from promptcache.model.paged_tables import PagedTables


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
        max_batch: int,
        max_blocks: int,
        capture: bool,
    ) -> None:
        """`max_blocks`: block-table width (the longest sequence's blocks); `capture`:
        record CUDA graphs (else replay runs the forward eagerly over the buffers)."""
        assert kv_cache.scratch_block is not None, "padding rows need a scratch block"
        self.module, self.kv_cache = module, kv_cache
        self.sizes = capture_sizes(max_batch)
        self.max_batch = max_batch
        dev = kv_cache.data.device
        self.scratch_slot = kv_cache.scratch_block * kv_cache.block_size

        def zeros(*shape: int, dtype: torch.dtype = torch.int32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=dev)

        self.input_ids = zeros(max_batch, dtype=torch.int64)
        self.positions = zeros(max_batch, dtype=torch.int64)
        self.slots = torch.full((max_batch,), self.scratch_slot, dtype=torch.int64, device=dev)
        self.tables = torch.full(
            (max_batch, max_blocks), kv_cache.scratch_block, dtype=torch.int32, device=dev
        )
        self.context_lens = zeros(max_batch)
        self.rows = torch.arange(max_batch, dtype=torch.int32, device=dev)
        self.ones = torch.ones(max_batch, dtype=torch.int32, device=dev)
        self.zeros = zeros(max_batch)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        if capture:
            self._capture_all()

    def bucket(self, n: int) -> int | None:
        """The smallest captured size that holds `n` decodes (None: too many)."""
        return next((b for b in self.sizes if b >= n), None)

    @torch.inference_mode()
    def run(
        self,
        input_ids: list[int],
        positions: list[int],
        slots: list[int],
        tables: list[list[int]],
    ) -> torch.Tensor:
        """Logits (n, vocab) of n decodes: each a token, its position, its K/V slot and
        its block table (covering position + 1 keys)."""
        n = len(input_ids)
        b = self.bucket(n)
        assert b is not None, f"{n} decodes exceed the largest graph ({self.max_batch})"
        self._fill(input_ids, positions, slots, tables, b)
        graph = self.graphs.get(b)
        if graph is None:
            return self._forward(b)[:n]
        graph.replay()
        return self.logits[b][:n]

    def _fill(
        self,
        input_ids: list[int],
        positions: list[int],
        slots: list[int],
        tables: list[list[int]],
        b: int,
    ) -> None:
        n, width = len(input_ids), max(len(t) for t in tables)
        dev = self.input_ids.device
        padded = [t + [0] * (width - len(t)) for t in tables]
        host = torch.tensor([input_ids, positions, slots], dtype=torch.int64)
        self.input_ids[:n].copy_(host[0].to(dev, non_blocking=True))
        self.positions[:n].copy_(host[1].to(dev, non_blocking=True))
        self.slots[:n].copy_(host[2].to(dev, non_blocking=True))
        self.context_lens[:n].copy_(host[1].to(torch.int32).add_(1).to(dev, non_blocking=True))
        table = torch.tensor(padded, dtype=torch.int32)
        self.tables[:n, :width].copy_(table.to(dev, non_blocking=True))
        # Padding rows: nothing to attend to, K/V into the scratch block.
        self.input_ids[n:b].zero_()
        self.positions[n:b].zero_()
        self.slots[n:b].fill_(self.scratch_slot)
        self.context_lens[n:b].zero_()

    def _forward(self, b: int) -> torch.Tensor:
        """Logits (b, vocab) of the first b buffer rows, by the eager forward."""
        tables = PagedTables(
            block_tables=self.tables[:b],
            context_lens=self.context_lens[:b],
            query_starts=self.rows[:b],
            query_lens=self.ones[:b],
            tile_seqs=self.rows[:b],
            tile_offsets=self.zeros[:b],
            block_q=1,
        )
        meta = AttentionMetadata(
            slot_mapping=self.slots[:b],
            num_decodes=b,
            decode_block_tables=None,
            decode_mask=None,
            prefills=[],
            sliding_window=self.module.spec.sliding_window,
            paged=[tables],
        )
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
