"""Run one scheduled step on the model: lay out the flat batch, forward, sample.

Lays out the batch as decode rows first, then one chunk per prefill (a `StepLayout`); the
attention backend chosen at start (`model.attention.selector.select_backend`) builds the
step's tensors and its metadata from that. Computes logits only for rows that end a
sequence's known tokens, i.e. rows whose next token is sampled this step. The step
executors are the runner's: CUDA graphs for decode-only steps on the Triton backend, and
the one-call 4-bit decode step on the CPU backend.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from promptcache.engine.cpu_step import DecodeStep
from promptcache.engine.cuda_graphs import DecodeGraphs
from promptcache.engine.grammar.mask import constrain
from promptcache.engine.kv_cache import KVCache
from promptcache.engine.logits import adjust, prompt_logprobs, token_logprobs
from promptcache.engine.outputs import TokenLogprob
from promptcache.engine.sampler import sample, skip_draws
from promptcache.engine.scheduler import ScheduledSeq
from promptcache.engine.sequence import Sequence
from promptcache.model.attention.backend import (
    AttentionBackend,
    SeqChunk,
    StepLayout,
    StepTensors,
)
from promptcache.model.attention.metadata import AttentionMetadata, TritonMetadata
from promptcache.model.attention.paged_tables import PREFILL_BLOCK_Q, build_tables
from promptcache.model.attention.triton_backend import TritonBackend
from promptcache.model.llama import LlamaForCausalLM

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StepInputs(StepTensors):
    """The backend's tensors for the step, and which rows sample."""

    sample_rows: list[int]  # rows whose logits are sampled
    sample_seqs: list[Sequence]
    prompt_rows: list[PromptRows]  # rows whose prompt logprobs are asked for


@dataclass(frozen=True, slots=True)
class PromptRows:
    """`count` rows of the step from `row` on, predicting `seq`'s prompt tokens `targets`."""

    seq: Sequence
    row: int
    targets: list[int]


@dataclass(frozen=True, slots=True)
class Sampled:
    """A sequence's next token, and its logprobs if asked for."""

    token: int
    logprob: TokenLogprob | None = None


class ModelRunner:
    """Owns the model module and the KV cache tensors; stateless between steps."""

    def __init__(
        self, module: LlamaForCausalLM, kv_cache: KVCache, backend: AttentionBackend
    ) -> None:
        """`backend`: the attention backend that builds each step's metadata. On the CPU
        backend a 4-bit model's decode-only steps run through the one-call step
        (`cpu_step`) where it fits."""
        self.module = module
        self.kv_cache = kv_cache
        self.backend = backend
        self.device = kv_cache.data.device
        self.block_size = kv_cache.block_size
        self.sliding_window = module.spec.sliding_window
        self.graphs: DecodeGraphs | None = None
        self.cpu_step = DecodeStep.build(module) if backend.name == "cpu" else None
        if self.cpu_step is not None:
            log.info("4-bit decode steps: all layers in one C call (csrc/decode_step.c)")

    @property
    def triton(self) -> bool:
        """Whether attention runs through the Triton kernel."""
        return isinstance(self.backend, TritonBackend)

    @property
    def cpu_decode(self) -> bool:
        """Whether decode rows run through our C kernel."""
        return self.backend.name == "cpu"

    def use_graphs(self, max_batch: int, capture: bool = True) -> None:
        """Run decode-only steps of up to `max_batch` sequences over static buffers,
        replayed from CUDA graphs captured now (`capture`; else run eagerly over the same
        buffers, as the CPU tests do)."""
        backend = self.backend
        assert isinstance(backend, TritonBackend), "static decode batches need Triton"
        self.graphs = DecodeGraphs(self.module, self.kv_cache, backend.tables, max_batch, capture)

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
        slots = torch.arange(first, first + n, device=self.device)
        meta: AttentionMetadata = TritonMetadata(slots, 0, self.sliding_window, [tables])
        ids = torch.zeros(n, dtype=torch.int64, device=self.device)
        positions = torch.arange(n, device=self.device)
        hidden = self.module(ids, positions, self.kv_cache.layers, meta)
        self.module.compute_logits(hidden[-1:])

    @torch.inference_mode()
    def execute(self, scheduled: list[ScheduledSeq]) -> dict[int, Sampled]:
        """Run the step; returns {id(seq): its next token} for sequences that sample now.
        Prompt logprobs asked for are added to their sequences as their rows are run."""
        logits = self._replay(scheduled)
        if logits is not None:  # a replayed step samples every row, in step order
            seqs = [s.seq for s in scheduled]
        else:
            inputs = self.prepare(scheduled)
            hidden = self.forward(inputs)  # writes the K/V of chunks that sample nothing
            for p in inputs.prompt_rows:
                rows_h = hidden[p.row : p.row + len(p.targets)]
                k = p.seq.params.prompt_logprobs or 0
                p.seq.prompt_logprobs.extend(
                    prompt_logprobs(rows_h, self.module.compute_logits, p.targets, k)
                )
            if not inputs.sample_rows:
                return {}
            rows = torch.tensor(inputs.sample_rows, device=self.device)
            logits = self.module.compute_logits(hidden.index_select(0, rows))
            seqs = inputs.sample_seqs
        constrain(logits, [s.matcher for s in seqs])
        adjust(logits, seqs)
        params = [s.params for s in seqs]
        _skip_owed_draws(seqs, logits.shape[-1])
        tokens = sample(logits, params, [s.generator for s in seqs])
        logprobs = token_logprobs(logits, params, tokens)
        return {id(s): Sampled(t, lp) for s, t, lp in zip(seqs, tokens, logprobs, strict=True)}

    def _replay(self, scheduled: list[ScheduledSeq]) -> torch.Tensor | None:
        """Logits of a decode-only step from the static decode batch, in step order;
        None where the step is not one (prefill chunks, too many decodes, no graphs)."""
        graphs = self.graphs
        if graphs is None or not scheduled or len(scheduled) > graphs.max_batch:
            return None
        if not all(s.seq.is_decoding and s.num_tokens == 1 for s in scheduled):
            return None
        assert isinstance(self.backend, TritonBackend)
        bs = self.block_size
        ids, positions, slots = [], [], []
        for item in scheduled:
            seq, pos = item.seq, item.seq.num_computed
            ids.append(seq.tokens_slice(pos, pos + 1)[0])
            positions.append(pos)
            slots.append(seq.block_table[pos // bs] * bs + pos % bs)
        rows = self.backend.tables.rows([(id(s.seq), s.seq.block_table) for s in scheduled])
        return graphs.run(ids, positions, slots, rows)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        """Final hidden states (T, hidden) of every token in the step; writes their K/V."""
        step = self.cpu_step
        if step is not None and step.serves(inputs):
            return step.run(inputs, self.kv_cache.layers)
        return self.module(inputs.input_ids, inputs.positions, self.kv_cache.layers, inputs.meta)

    @torch.inference_mode()
    def all_logits(self, scheduled: list[ScheduledSeq]) -> torch.Tensor:
        """Logits (T, vocab) of every token in the step, in batch order (for checks)."""
        return self.module.compute_logits(self.forward(self.prepare(scheduled)))

    def prepare(self, scheduled: list[ScheduledSeq]) -> StepInputs:
        """The step's layout (decode rows first) and the backend's tensors for it."""
        decodes = [s for s in scheduled if s.seq.is_decoding]
        prefills = [s for s in scheduled if not s.seq.is_decoding]
        ids: list[int] = []
        positions: list[int] = []
        sample_rows: list[int] = []
        sample_seqs: list[Sequence] = []
        prompt_rows: list[PromptRows] = []
        for item in decodes + prefills:
            seq, start = item.seq, item.seq.num_computed
            if seq.params.prompt_logprobs is not None:
                rows = _prompt_rows(seq, start, item.num_tokens, len(ids))
                prompt_rows.extend([rows] if rows is not None else [])
            ids.extend(seq.tokens_slice(start, start + item.num_tokens))
            positions.extend(range(start, start + item.num_tokens))
            if seq.samples and start + item.num_tokens == seq.num_tokens:
                sample_rows.append(len(ids) - 1)
                sample_seqs.append(seq)
        layout = StepLayout(
            [_chunk(i) for i in decodes], [_chunk(i) for i in prefills], ids, positions
        )
        t = self.backend.build(layout)
        return StepInputs(t.input_ids, t.positions, t.meta, sample_rows, sample_seqs, prompt_rows)


def _prompt_rows(seq: Sequence, start: int, n: int, base: int) -> PromptRows | None:
    """The rows of a chunk of `n` tokens from `start` (row `base` of the step) that predict
    prompt tokens whose logprobs `seq` lacks (none twice, after a preemption)."""
    lo = max(start, len(seq.prompt_logprobs))
    hi = min(start + n, seq.num_prompt_tokens - 1)
    if hi <= lo:
        return None
    return PromptRows(seq, base + lo - start, seq.prompt_token_ids[lo + 1 : hi + 1])


def _chunk(item: ScheduledSeq) -> SeqChunk:
    seq = item.seq
    return SeqChunk(id(seq), seq.block_table, seq.num_computed, item.num_tokens)


def _skip_owed_draws(seqs: list[Sequence], vocab: int) -> None:
    """Resumed requests skip the draws of their earlier output before their first one."""
    for s in seqs:
        if s.draws_to_skip and s.generator is not None:
            skip_draws(s.generator, s.draws_to_skip, vocab)
        s.draws_to_skip = 0
