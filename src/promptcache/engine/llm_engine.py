"""The engine's Python API: add requests, step the batch, collect outputs.

Ties the scheduler, the model runner and the tokenizer together. Single-threaded: a
caller (the CLI, or the server's engine thread) drives `step()`. `prepare()` is the one
exception: it reads only fixed facts, so any thread may check a request before handing it
to the engine thread, which then `add()`s it without checking again.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.block_pool import BlockPool
from promptcache.cache.expiry import RetentionPolicy
from promptcache.cache.handle import CacheHandle, MatchReason
from promptcache.cache.index import Location, Tier
from promptcache.cache.policy import CachePolicy, UsageRules
from promptcache.cache.prefix_cache import PrefixCache
from promptcache.cache.settings import CacheMode, CacheSettings
from promptcache.cache.tiers import LowerTier
from promptcache.config import EngineConfig
from promptcache.engine.errors import RequestError
from promptcache.engine.grammar.budget import CompileBudget
from promptcache.engine.grammar.compiler import GrammarCache
from promptcache.engine.grammar.mask import Advance
from promptcache.engine.host_memory import tune_host_malloc
from promptcache.engine.kv_cache import KVCache, kv_identity
from promptcache.engine.model_runner import ModelRunner, Sampled
from promptcache.engine.outputs import (
    CacheReport,
    PrefixReuse,
    RequestOutput,
    TokenLogprob,
    Usage,
)
from promptcache.engine.request import GenerationRequest, PreparedRequest, check_request
from promptcache.engine.sampling_params import SamplingParams
from promptcache.engine.scheduler import ScheduledSeq, Scheduler
from promptcache.engine.sequence import FinishReason, Sequence, SequenceStatus
from promptcache.engine.tiers.setup import disk_tier, host_tier, tier_stats
from promptcache.model.attention.selector import select_backend, uses_triton
from promptcache.model.loading.loader import LoadedModel
from promptcache.text.detokenizer import Detokenizer
from promptcache.util import cdiv

log = logging.getLogger(__name__)

__all__ = ["LLMEngine", "RequestError"]


@dataclass(slots=True)
class _Request:
    seq: Sequence
    detok: Detokenizer


def cache_policy(config: EngineConfig) -> CachePolicy:
    """What the cache reuses and how usage reports it, from the engine settings (also what
    a router reports for its workers)."""
    c = config
    rules = UsageRules(c.usage_rules)
    return CachePolicy(
        c.enable_prefix_caching, c.min_prompt_tokens, c.increment, rules, c.min_breakpoint_tokens
    )


class LLMEngine:
    """Continuous-batching generation over a paged KV cache."""

    def __init__(
        self,
        model: LoadedModel,
        config: EngineConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` (unix seconds) times retention; tests pass a fake one."""
        self.model = model
        self.config = config or EngineConfig()
        self.tokenizer = model.tokenizer
        c = self.config
        if c.tune_host_malloc and model.device.type == "cpu":
            tune_host_malloc()
        triton = uses_triton(c.attention_backend, model.device, model.spec.head_dim, c.block_size)
        # With the Triton kernel a scratch block takes the K/V of static batches' padding.
        self.kv_cache = KVCache(
            model.spec, c.block_size, c.kv_cache_bytes, model.dtype, model.device, triton
        )
        retention = RetentionPolicy(c.in_memory_ttl, c.in_memory_max, c.extended_ttl)
        self.pool = BlockPool(self.kv_cache.num_blocks, c.eviction_history, retention, clock)
        self.policy = cache_policy(c)
        self.kv_identity = kv_identity(model.fingerprint, model.dtype, c.block_size)
        self.host = host_tier(c, self.kv_cache, self.pool.retention, clock)
        identity = (self.kv_identity, model.fingerprint)
        self.disk = disk_tier(c, self.kv_cache, model.spec, identity, clock)
        self.tiers: list[LowerTier] = [t for t in (self.host, self.disk) if t is not None]
        self._tier_of = {t.tier: t for t in self.tiers}
        for tier in self.tiers:
            self.pool.add_eviction_listener(tier.on_evict)
        self.cache = PrefixCache(
            self.pool,
            self.policy,
            c.block_size,
            self.kv_identity,
            self.tiers,
            loader=self._load,
        )
        self.scheduler = Scheduler(c, self.pool, self.cache, self._load)
        self.max_model_len = self._max_model_len()
        backend = select_backend(
            c.attention_backend,
            model.device,
            model.dtype,
            model.spec,
            c.block_size,
            2 * c.max_num_seqs,  # device tables: the running and the recently preempted
            self.max_model_len,
        )
        self.runner = ModelRunner(model.module, self.kv_cache, backend)
        if triton and model.device.type == "cuda":
            self.runner.warm_up()
            if c.cuda_graphs:
                self.runner.use_graphs(c.max_num_seqs)
        self.eos_token_ids = self._eos_ids()
        self._requests: dict[str, _Request] = {}
        self._ids = itertools.count()
        self.num_preemptions = 0
        self._grammars: GrammarCache | None = None  # built by the first constrained request
        self._grammars_lock = threading.Lock()

    def _load(self, where: Location, h: BlockHash, block_id: int) -> None:
        """Copy a block of the pool or of a lower tier into pool block `block_id`."""
        if where.tier is Tier.DEVICE:
            data = self.kv_cache.data
            data[:, :, :, block_id].copy_(data[:, :, :, where.slot])
            return
        tier = self._tier_of.get(where.tier)
        if tier is None:
            raise AssertionError(f"no tier to load {where} from")
        tier.load(where, h, block_id)

    def close(self) -> None:
        """Finish the tiers' pending work (the disk's queued writes) and stop their threads."""
        for tier in self.tiers:
            tier.close()
        if self._grammars is not None:
            self._grammars.budget.shutdown()

    def _max_model_len(self) -> int:
        limit = self.config.max_model_len or self.model.spec.max_position_embeddings
        limit = min(limit, self.model.spec.max_position_embeddings)
        if self.kv_cache.capacity_tokens < limit:
            log.warning(
                "KV pool holds %d tokens, below the context length %d: max_model_len lowered",
                self.kv_cache.capacity_tokens,
                limit,
            )
            limit = self.kv_cache.capacity_tokens
        return limit

    def _eos_ids(self) -> frozenset[int]:
        ids = set(self.model.spec.eos_token_ids)
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return frozenset(ids)

    # -- requests ------------------------------------------------------------------------

    def add_request(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        cache_salt: str | None = None,
    ) -> str:
        """Queue a prompt (text or token ids); returns its request id.

        `cache_salt` (the tenant) keys the prefix cache: requests with different salts never
        share cached blocks. `submit` takes the full request (retention, cache key, ...).
        """
        token_ids = (
            self.tokenizer.encode(prompt, add_special_tokens=False)
            if isinstance(prompt, str)
            else list(prompt)
        )
        request = GenerationRequest(
            token_ids, params or SamplingParams(), CacheSettings(tenant=cache_salt), (), request_id
        )
        return self.submit(request)

    def submit(self, request: GenerationRequest) -> str:
        """Check and queue a request; returns its request id."""
        return self.add(self.prepare(request)).request_id

    def prepare(self, request: GenerationRequest) -> PreparedRequest:
        """Check a request (raises `RequestError`) and fix its id and max new tokens.

        Reads only fixed facts (context length, vocabulary) and the grammar cache (locked),
        so any thread may call it but the engine's: an output grammar not yet cached is
        compiled in the grammar budget's threads while this one waits, up to
        `grammar_compile_timeout_s` (callers warm it first, see `EngineClient.warm_grammar`).
        """
        max_tokens = self._check(request.token_ids, request.params, request.prefill_only)
        if not 0 <= request.resumed < len(request.token_ids):
            raise RequestError(f"resumed must be in [0, {len(request.token_ids)})", param="resumed")
        request_id = request.request_id or f"req-{next(self._ids)}"
        grammar = self.grammars.get(request.output) if request.output.constrained else None
        return PreparedRequest(request, request_id, max_tokens, grammar)

    @property
    def grammars(self) -> GrammarCache:
        """The compiled grammars of this model's tokenizer (built on first use)."""
        with self._grammars_lock:
            if self._grammars is None:
                size = self.model.spec.vocab_size
                c = self.config
                budget = CompileBudget[Any](c.grammar_compile_threads, c.grammar_compile_timeout_s)
                self._grammars = GrammarCache(self.tokenizer, size, c.grammar_cache_size, budget)
            return self._grammars

    def add(self, prepared: PreparedRequest) -> Sequence:
        """Queue a prepared request (engine thread); returns its sequence."""
        request, request_id = prepared.request, prepared.request_id
        if request_id in self._requests:
            raise RequestError(f"request id {request_id!r} is already running")
        params = request.params
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        generator = None
        if not params.greedy:
            generator = torch.Generator(device=self.model.device).manual_seed(seed)
        token_ids = request.token_ids
        settings = request.cache
        if params.prompt_logprobs is not None:  # every prompt position must be computed
            settings = dataclasses.replace(settings, reads=False)
        handle = self.cache.open(settings)
        seq = Sequence(
            request_id, token_ids, params, prepared.max_tokens, generator, handle, request.messages
        )
        if request.prefill_only:
            seq.prefill_end = self.cache.cached_end(handle, len(token_ids))
        if prepared.grammar is not None:
            seq.matcher = self.grammars.matcher(prepared.grammar)
        detok = Detokenizer(self.tokenizer, params.stop)
        if request.resumed:
            _resume(seq, detok, token_ids[-request.resumed :])
        self._requests[request_id] = _Request(seq, detok)
        self.scheduler.add(seq)
        return seq

    def peek(self, request: GenerationRequest) -> PrefixReuse:
        """What `request` would reuse if queued now, reported as its usage would be; the
        cache is left as it was (engine thread: it reads the live pool)."""
        p = self.cache.peek(request.cache, request.token_ids)
        implicit = request.cache.mode is CacheMode.IMPLICIT
        cached, _ = self.policy.usage(p.hit_tokens, 0, p.breakpoint_tokens, 0, implicit)
        return PrefixReuse(p.hit_tokens, cached)

    def _check(self, token_ids: list[int], p: SamplingParams, prefill_only: bool) -> int:
        vocab = self.model.spec.vocab_size
        return check_request(token_ids, p, self.max_model_len, vocab, prefill_only)

    def abort(self, request_id: str) -> RequestOutput | None:
        """Cancel a request and free its blocks; returns its last output, or None if unknown."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return None
        self._finish(req.seq, FinishReason.ABORT)
        return self._output(req, [], [])

    def adopt_thread(self) -> None:
        """Call from a thread that will drive `step()`: re-applies the process's intra-op
        thread count to this thread's OpenMP team (steps measured ~10 % faster on CPU)."""
        torch.set_num_threads(torch.get_num_threads())

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # -- stepping -----------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one batch step; returns an output for each request that got a token or ended."""
        self.pool.sweep()  # drops expired blocks (at most every few seconds)
        for tier in self.tiers:
            tier.sweep()
        plan = self.scheduler.schedule()
        self.num_preemptions += len(plan.preempted)
        outputs = [self._prefilled(seq) for seq in plan.ready]
        if not plan.scheduled:
            if not outputs:
                for tier in self.tiers:  # requests may be waiting for fetches (disk reads)
                    tier.wait(0.01)
            return outputs
        sampled = self.runner.execute(plan.scheduled)
        now = time.perf_counter()
        self.scheduler.on_step_done(plan)
        for item in plan.scheduled:
            seq = item.seq
            got = sampled.get(id(seq))
            if got is not None:
                outputs.append(self._append(seq, got, now))
            elif seq.prefilled:
                outputs.append(self._prefilled(seq))
        return outputs

    def _prefilled(self, seq: Sequence) -> RequestOutput:
        """A prefill-only request computed (and cached) its target: it ends, with no
        output, as `stop`."""
        req = self._requests.pop(seq.request_id)
        self._finish(seq, FinishReason.STOP)
        return self._output(req, [], [])

    def _append(self, seq: Sequence, got: Sampled, now: float) -> RequestOutput:
        req = self._requests[seq.request_id]
        token = got.token
        seq.output_token_ids.append(token)
        if got.logprob is not None:
            seq.logprobs.append(got.logprob)
        if seq.first_token_time is None:
            seq.first_token_time = now
        hit_stop_string = req.detok.update(token)
        reason = self._stop_reason(seq, token, hit_stop_string)
        if seq.matcher is not None and reason is not FinishReason.STOP:
            step = seq.matcher.advance(token)
            if step is Advance.REJECTED:
                log.warning("%s: the grammar rejected token %d", seq.request_id, token)
                reason = FinishReason.GRAMMAR
            elif step is Advance.DONE:
                reason = FinishReason.STOP
        if reason is not None:
            self._finish(seq, reason)
            del self._requests[seq.request_id]
        return self._output(req, [token], [got.logprob] if got.logprob is not None else [])

    def _stop_reason(self, seq: Sequence, token: int, hit_stop_string: bool) -> FinishReason | None:
        p = seq.params
        if hit_stop_string or token in p.stop_token_ids:
            return FinishReason.STOP
        if not p.ignore_eos and token in self.eos_token_ids:
            return FinishReason.STOP
        if len(seq.output_token_ids) >= seq.max_tokens or seq.num_tokens >= self.max_model_len:
            return FinishReason.LENGTH
        return None

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        self.scheduler.finish(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.finish_time = time.perf_counter()

    def _output(
        self, req: _Request, new_tokens: list[int], new_logprobs: list[TokenLogprob]
    ) -> RequestOutput:
        seq = req.seq
        ttft = None if seq.first_token_time is None else seq.first_token_time - seq.arrival_time
        total = None if seq.finish_time is None else seq.finish_time - seq.arrival_time
        finished = seq.finished
        first = bool(new_tokens) and len(new_tokens) == len(seq.output_token_ids)
        return RequestOutput(
            request_id=seq.request_id,
            text=req.detok.text,
            new_token_ids=new_tokens,
            finished=finished,
            finish_reason=seq.finish_reason.value if seq.finish_reason else None,
            usage=self._usage(seq),
            ttft_s=ttft,
            total_s=total,
            # A finished sequence's list no longer changes: handed over without a copy.
            token_ids=seq.output_token_ids if finished else [],
            cache=CacheReport.of(seq.cache) if finished else None,
            stop_sequence=req.detok.matched if finished else None,
            new_logprobs=new_logprobs,
            logprobs=seq.logprobs if finished else [],
            prompt_logprobs=seq.prompt_logprobs if finished or first else [],
            queue_s=seq.queue_time,
        )

    def _usage(self, seq: Sequence) -> Usage:
        h = seq.cache
        reused, written = h.hit_tokens or 0, h.write_tokens
        bp_tokens = h.admission.breakpoint_tokens if h.admission is not None else 0
        implicit = h.settings.mode is CacheMode.IMPLICIT
        cached, write = self.policy.usage(reused, written, bp_tokens, h.breakpoint_end, implicit)
        return Usage(
            prompt_tokens=len(seq.prompt_token_ids),
            cached_tokens=cached,
            cache_write_tokens=write,
            completion_tokens=len(seq.output_token_ids),
            reused_tokens=reused,
            written_tokens=written + h.partial_write_tokens,
        )

    # -- convenience ----------------------------------------------------------------------

    def generate(
        self, prompts: Iterable[str | list[int]], params: SamplingParams | None = None
    ) -> list[RequestOutput]:
        """Run `prompts` together to completion; outputs in the prompts' order."""
        return self._finish_all([self.add_request(p, params) for p in prompts])

    def run(self, requests: Iterable[GenerationRequest]) -> list[RequestOutput]:
        """Submit `requests` and run them together to completion; outputs in their order."""
        return self._finish_all([self.submit(r) for r in requests])

    def _finish_all(self, ids: list[str]) -> list[RequestOutput]:
        final: dict[str, RequestOutput] = {}
        while len(final) < len(ids):
            for out in self.step():
                if out.finished:
                    final[out.request_id] = out
        return [final[i] for i in ids]

    def prompt_logits(self, token_ids: list[int], chunk_size: int | None = None) -> torch.Tensor:
        """Logits (n, vocab) at every prompt position, computed through the paged KV path in
        chunks of `chunk_size` tokens (default: the step budget). Blocks are freed after."""
        chunk = chunk_size or self.config.max_num_batched_tokens
        uncached = CacheHandle(CacheSettings(), None, MatchReason.DISABLED)
        greedy = SamplingParams(temperature=0)
        seq = Sequence("logits-probe", list(token_ids), greedy, 1, None, uncached)
        rows = []
        try:
            while seq.num_uncomputed:
                n = min(chunk, seq.num_uncomputed)
                blocks = cdiv(seq.num_computed + n, self.config.block_size)
                seq.block_table.extend(self.pool.allocate(blocks - len(seq.block_table)))
                rows.append(self.runner.all_logits([ScheduledSeq(seq, n)]))
                seq.num_computed += n
        finally:
            self.pool.free(seq.block_table)
        return torch.cat(rows)

    def check_integrity(self) -> None:
        """Assert the block pool's bookkeeping agrees with the live sequences."""
        seqs = [r.seq for r in self._requests.values()]
        self.cache.check_integrity((s.cache for s in seqs), (s.block_table for s in seqs))
        for s in seqs:
            if s.status is SequenceStatus.WAITING:
                assert not s.block_table and s.num_computed == 0, f"{s.request_id} waits with KV"

    def stats(self) -> dict[str, Any]:
        """Pool, cache and queue figures (counters are totals since start)."""
        cc, pc = self.cache.counters, self.pool.counters
        return {
            "num_blocks": self.pool.num_blocks,
            "blocks_in_use": self.pool.num_in_use,
            "blocks_cached": self.pool.num_cached,
            "bytes_in_use": self.pool.num_in_use * self.kv_cache.bytes_per_block,
            "prompt_tokens_queried": cc.queried_tokens,
            "prompt_tokens_reused": cc.hit_tokens,
            "prompt_tokens_written": cc.write_tokens,
            "breakpoint_hits": cc.breakpoint_hits,
            "breakpoint_writes": cc.breakpoint_writes,
            "breakpoints_skipped": cc.breakpoints_skipped,
            "blocks_cached_total": pc.blocks_cached,
            "blocks_evicted_total": pc.blocks_evicted,
            "blocks_expired_total": pc.blocks_expired,
            **tier_stats(self.tiers, cc.tier_hit_tokens),
            "running": len(self.scheduler.running),
            "num_preemptions": self.num_preemptions,
            "waiting": len(self.scheduler.waiting),
            **self._grammar_stats(),
        }

    def _grammar_stats(self) -> dict[str, Any]:
        g = self._grammars
        if g is None:
            return {}
        s = g.stats
        return {
            "grammar_compiles_total": s.compiles,
            "grammar_cache_hits_total": s.hits,
            "grammar_compile_failures_total": s.failures,
            "grammar_compile_seconds_total": s.compile_seconds,
            "grammar_compile_timeouts_total": g.budget.timeouts,
        }


def _resume(seq: Sequence, detok: Detokenizer, earlier: list[int]) -> None:
    """Carry a resumed request's earlier output (the prompt's tail) as output: its text,
    its grammar state, its penalty counts and its sampler draws."""
    seq.earlier_output = earlier
    seq.draws_to_skip = len(earlier) if seq.generator is not None else 0
    for token in earlier:
        detok.update(token)
        if seq.matcher is not None:
            seq.matcher.advance(token)
