"""The prefix cache's interface to the scheduler: open, match at admission, register after
compute, release.

    prompt:   | b0 | b1 | b2 | b3 | b4 | b5 |..|     full blocks hashed as a chain
    index:    | b0 | b1 | b2 | b3 |                   longest run found (4 blocks): reused,
                                                      short of the prompt's last token

Reuse is physical and maximal, at block granularity, for prompts of any length; what
usage *reports* follows the usage rules (`CachePolicy.reported`), applied by the engine.
The run may go on past the pool into slower tiers: the host tier's copies, then the disk
tier's files (read in the background while the request waits). Those blocks are copied
into fresh pool blocks at admission (`load_lower`). A `24h` request's blocks are written
through to disk as they are computed or reused (`DiskStage.persist`).

Requests share hit blocks by reference count; nothing is copied. While a request computes
prompt blocks nobody has cached yet, it *claims* their hashes, so a second request with
the same new prefix can wait for them instead of computing them again (see `match`).
Per-request state lives in a `CacheHandle` this module owns; the engine's sequences are
read through `TokenSource` and never written. Works on hashes and block ids only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from promptcache.cache.block_hash import BlockHash, chain_hashes, seed_hash
from promptcache.cache.block_pool import BlockPool
from promptcache.cache.disk_index import DiskStage
from promptcache.cache.handle import CacheHandle, CacheMatch, MatchReason, TokenSource
from promptcache.cache.host_index import HostIndex
from promptcache.cache.index import Location, Tier
from promptcache.cache.policy import CachePolicy
from promptcache.cache.settings import CacheSettings, Retention

Loader = Callable[[Location, BlockHash, int], None]  # (where, hash, pool block id): copy in


@dataclass(slots=True)
class CacheCounters:
    """Monotonic counters since start (prompt tokens of cacheable and other requests)."""

    queried_tokens: int = 0  # prompt tokens of requests admitted for the first time
    hit_tokens: int = 0  # of those, tokens reused from the cache
    write_tokens: int = 0  # prompt tokens newly added to the cache
    host_hit_tokens: int = 0  # of the hit tokens, those loaded from the host tier
    disk_hit_tokens: int = 0  # of the hit tokens, those loaded from the disk tier


class PrefixCache:
    """Matching, claiming and registering of full prompt blocks over a `BlockPool`."""

    def __init__(
        self,
        pool: BlockPool,
        policy: CachePolicy,
        block_size: int,
        kv_identity: str,
        host: HostIndex | None = None,
        disk: DiskStage | None = None,
    ) -> None:
        self.pool = pool
        self.host = host
        self.disk = disk
        self.policy = policy
        self.block_size = block_size
        self.kv_identity = kv_identity
        self.counters = CacheCounters()
        self._claims: dict[BlockHash, CacheHandle] = {}

    def open(self, settings: CacheSettings) -> CacheHandle:
        """A handle for a new request; cached whenever caching is on (its seed folds in the
        KV identity and the tenant)."""
        if not self.policy.enabled:
            return CacheHandle(settings, None, MatchReason.DISABLED)
        seed = seed_hash(self.kv_identity, settings.tenant)
        return CacheHandle(settings, seed, MatchReason.NOT_FOUND)

    def match(self, handle: CacheHandle, seq: TokenSource) -> CacheMatch:
        """Longest reusable cached prefix of `seq` — blocks in the pool, then copies in the
        host tier or on disk — or a `WAITING` match (another request computes more of it,
        or its disk blocks are being read)."""
        if handle.seed is None:
            return CacheMatch([], 0, 0, handle.first_reason)
        if self.disk is not None and handle.disk_wanted and self.disk.reading(handle.disk_wanted):
            handle.waited_steps += 1  # its disk blocks are still being read
            return CacheMatch([], 0, 0, MatchReason.WAITING)
        n_blocks = seq.num_tokens // self.block_size
        self._extend_hashes(handle, seq, n_blocks)
        hashes = handle.block_hashes[:n_blocks]
        matched = self.pool.match(hashes)
        lower = self._lower_run(hashes[len(matched) :])
        found = len(matched) + len(lower)
        matched_tokens = found * self.block_size
        hit = self._usable(seq, matched_tokens)
        if self._worth_waiting(handle, seq, hashes, found, hit):
            handle.waited_steps += 1
            return CacheMatch([], 0, matched_tokens, MatchReason.WAITING)
        n_hit = hit // self.block_size
        blocks, lower = matched[:n_hit], lower[: max(0, n_hit - len(matched))]
        lower, reading = self._read_from_disk(handle, hashes[len(blocks) :], lower)
        if reading:
            handle.waited_steps += 1
            return CacheMatch([], 0, matched_tokens, MatchReason.WAITING)
        hit = (len(blocks) + len(lower)) * self.block_size
        reason = self._reason(handle, matched_tokens, hit)
        evicted = None
        if found < len(hashes):  # did the prefix go on, and leave for room?
            evicted = self.pool.recently_evicted(hashes[found])
        return CacheMatch(blocks, hit, matched_tokens, reason, evicted, lower)

    def _lower_run(self, hashes: list[BlockHash]) -> list[Location]:
        """Where each block of the longest run of `hashes` held in the host tier or on disk
        lives (host first: it is faster)."""
        run: list[Location] = []
        for h in hashes:
            slot = self.host.peek(h) if self.host is not None else None
            if slot is not None:
                run.append(Location(Tier.HOST, slot))
            elif self.disk is not None and self.disk.index.holds(h):
                run.append(Location(Tier.DISK, -1))
            else:
                break
        return run

    def _read_from_disk(
        self, handle: CacheHandle, hashes: list[BlockHash], lower: list[Location]
    ) -> tuple[list[Location], bool]:
        """Have the disk blocks of `lower` read in the background; True while the request
        should wait for them. Once the reads are done, the run stops at the first block
        that could not be read (bad file, dropped meanwhile): that one is computed."""
        if self.disk is None:
            return lower, False
        disk = [h for h, loc in zip(hashes, lower, strict=False) if loc.tier is Tier.DISK]
        if all(self.disk.staged(h) for h in disk):
            return lower, False
        if self.disk.reading(disk) or not handle.disk_wanted:
            self.disk.prefetch(disk)
            handle.disk_wanted = disk
            return lower, True
        for i, (h, loc) in enumerate(zip(hashes, lower, strict=False)):
            if loc.tier is Tier.DISK and not self.disk.staged(h):
                return lower[:i], False
        return lower, False

    def on_admit(self, handle: CacheHandle, match: CacheMatch, seq: TokenSource) -> None:
        """The scheduler placed the request on `match`'s blocks: hold them with the request's
        retention, record the hit (first admission only), claim the blocks left to compute.
        A `24h` request's reused blocks are kept on disk too."""
        prompt_len = seq.num_prompt_tokens
        self.pool.acquire(match.block_ids, handle.settings.retention)
        handle.num_registered_blocks = len(match.block_ids)
        if handle.hit_tokens is None:
            handle.hit_tokens = match.hit_tokens
            handle.admission = match
            self.counters.queried_tokens += prompt_len
            self.counters.hit_tokens += match.hit_tokens
            tiers = [loc.tier for loc in match.loads]
            handle.host_tokens = tiers.count(Tier.HOST) * self.block_size
            handle.disk_tokens = tiers.count(Tier.DISK) * self.block_size
            self.counters.host_hit_tokens += handle.host_tokens
            self.counters.disk_hit_tokens += handle.disk_tokens
        if handle.seed is not None:
            prompt_blocks = prompt_len // self.block_size
            start = len(match.block_ids) + len(match.loads)
            for h in handle.block_hashes[start:prompt_blocks]:
                self._claims.setdefault(h, handle)
            for i, block_id in enumerate(match.block_ids):
                self._persist(handle, seq, i, block_id)

    def load_lower(
        self,
        handle: CacheHandle,
        match: CacheMatch,
        seq: TokenSource,
        block_table: list[int],
        loader: Loader,
    ) -> None:
        """Give the match's host and disk blocks pool blocks: allocate them, have
        `loader(location, hash, block_id)` copy each in, index them again, and append them
        to `block_table`."""
        if not match.loads:
            return
        first = len(match.block_ids)
        hashes = handle.block_hashes[first : first + len(match.loads)]
        if self.host is not None:
            self.host.pin(hashes)
        try:
            fresh = self.pool.allocate(len(hashes))  # may evict others into the host tier
            for h, loc, block_id in zip(hashes, match.loads, fresh, strict=True):
                loader(loc, h, block_id)
                if loc.tier is Tier.HOST and self.host is not None:
                    self.host.touch(h)
                    self.host.counters.loads += 1
                self.pool.register(block_id, h, handle.settings.retention)
        finally:
            if self.host is not None:
                self.host.unpin(hashes)
        for i, block_id in enumerate(fresh, start=first):
            self._persist(handle, seq, i, block_id)
        block_table.extend(fresh)
        handle.num_registered_blocks = len(block_table)

    def _persist(self, handle: CacheHandle, seq: TokenSource, i: int, block_id: int) -> None:
        """Write-through: block `i` of a `24h` request goes to the disk tier too."""
        if self.disk is None or handle.settings.retention is not Retention.EXTENDED:
            return
        assert handle.seed is not None
        parent = handle.block_hashes[i - 1] if i else handle.seed
        tokens = seq.tokens_slice(i * self.block_size, (i + 1) * self.block_size)
        self.disk.persist(handle.block_hashes[i], parent, tokens, block_id)

    def on_computed(
        self, handle: CacheHandle, seq: TokenSource, block_table: Sequence[int], num_computed: int
    ) -> None:
        """Index the request's newly completed full blocks (prompt and generated)."""
        if handle.seed is None:
            return
        full = num_computed // self.block_size
        self._extend_hashes(handle, seq, full)
        hashes = handle.block_hashes
        prompt_len = seq.num_prompt_tokens
        retention = handle.settings.retention
        for i in range(handle.num_registered_blocks, full):
            if self._claims.get(hashes[i]) is handle:
                del self._claims[hashes[i]]
            if self.pool.register(block_table[i], hashes[i], retention):
                written = max(0, min(self.block_size, prompt_len - i * self.block_size))
                handle.write_tokens += written
                self.counters.write_tokens += written
                self._persist(handle, seq, i, block_table[i])
        handle.num_registered_blocks = max(handle.num_registered_blocks, full)

    def release(self, handle: CacheHandle) -> None:
        """Drop the request's claims (it finished, was aborted or was preempted); its blocks
        are freed by the caller."""
        for h in handle.block_hashes:
            if self._claims.get(h) is handle:
                del self._claims[h]
        handle.num_registered_blocks = 0

    def _usable(self, seq: TokenSource, matched_tokens: int) -> int:
        """Whole matched blocks, short of the last known token (it is always computed)."""
        last_full = (seq.num_tokens - 1) // self.block_size * self.block_size
        return min(matched_tokens, last_full)

    def _reason(self, handle: CacheHandle, matched_tokens: int, hit: int) -> MatchReason:
        if handle.hit_tokens is not None:
            return MatchReason.RESUMED
        if matched_tokens == 0:
            return MatchReason.NOT_FOUND
        return MatchReason.FULL if hit == matched_tokens else MatchReason.LAST_TOKEN

    def _worth_waiting(
        self,
        handle: CacheHandle,
        seq: TokenSource,
        hashes: list[BlockHash],
        matched: int,
        hit: int,
    ) -> bool:
        claimed = matched
        while claimed < len(hashes) and self._claims.get(hashes[claimed], handle) is not handle:
            claimed += 1
        return claimed > matched and self._usable(seq, claimed * self.block_size) > hit

    def _extend_hashes(self, handle: CacheHandle, seq: TokenSource, n_blocks: int) -> None:
        """Make `handle.block_hashes` cover the first `n_blocks` full blocks (hashed once)."""
        assert handle.seed is not None
        have = len(handle.block_hashes)
        if have < n_blocks:
            parent = handle.block_hashes[-1] if have else handle.seed
            tokens = seq.tokens_slice(have * self.block_size, n_blocks * self.block_size)
            handle.block_hashes.extend(chain_hashes(parent, tokens, self.block_size))

    def check_integrity(
        self, handles: Iterable[CacheHandle], block_tables: Iterable[Sequence[int]]
    ) -> None:
        """Claims belong to live requests; pool invariants hold."""
        ids = {id(h) for h in handles}
        assert all(id(h) in ids for h in self._claims.values()), "claim by a dead request"
        self.pool.check_integrity(block_tables)
