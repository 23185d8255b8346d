"""The prefix cache's interface to the scheduler: open, match at admission, register after
compute, release.

    prompt:   | b0 | b1 | b2 | b3 | b4 | b5 |..|     full blocks hashed as a chain
    index:    | b0 | b1 | b2 | b3 |                   longest run found (4 blocks): reused,
                                                      short of the prompt's last token

Reuse is physical and maximal, at block granularity, for prompts of any length; what
usage *reports* follows the usage rules (`CachePolicy.reported`), applied by the engine.
The run may go on past the pool into slower tiers (`promptcache.cache.tiers.LowerTier`,
fastest first: the host tier's copies, then the disk tier's files, fetched in the
background while the request waits). Those blocks are copied into fresh pool blocks at
admission (`load_lower`). Every block computed or reused is offered to each tier's
`store` (the disk tier writes `24h` blocks through). No tier is special-cased here.

Explicit breakpoints (`promptcache.cache.breakpoints`) add entries that end exactly at a
token: full blocks up to the breakpoint plus a partial block, copied on write. A request
in `explicit` mode caches and matches only those; in `implicit` mode they add to the
automatic block-granular entries.

Requests share hit blocks by reference count; nothing is copied. While a request computes
prompt blocks nobody has cached yet, it *claims* their hashes, so a second request with
the same new prefix can wait for them instead of computing them again (see `match`).
Per-request state lives in a `CacheHandle` this module owns; the engine's sequences are
read through `TokenSource` and never written. Works on hashes and block ids only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from promptcache.cache.block_hash import BlockHash, chain_hashes, seed_hash
from promptcache.cache.block_pool import BlockPool
from promptcache.cache.breakpoint_entries import BreakpointEntries
from promptcache.cache.breakpoints import BreakpointHit
from promptcache.cache.counters import CacheCounters
from promptcache.cache.handle import (
    CacheHandle,
    CacheMatch,
    CachePeek,
    MatchReason,
    PromptTokens,
    TokenSource,
)
from promptcache.cache.index import Loader, Location, Tier
from promptcache.cache.lower import LowerTiers
from promptcache.cache.policy import CachePolicy
from promptcache.cache.settings import CacheMode, CacheSettings
from promptcache.cache.tiers import LowerTier, PoolBlock


class PrefixCache:
    """Matching, claiming and registering of full prompt blocks over a `BlockPool`."""

    def __init__(
        self,
        pool: BlockPool,
        policy: CachePolicy,
        block_size: int,
        kv_identity: str,
        tiers: Sequence[LowerTier] = (),
        loader: Loader | None = None,
    ) -> None:
        """`tiers`: the lower tiers, fastest first. `loader(location, hash, block_id)`
        copies a block (from the pool or a tier) into pool block `block_id`; it makes the
        partial blocks of breakpoints."""
        self.pool = pool
        self.loader = loader
        self.lower = LowerTiers(tiers)
        self.policy = policy
        self.block_size = block_size
        self.kv_identity = kv_identity
        self.counters = CacheCounters()
        self.breakpoints = BreakpointEntries(
            pool, self.lower, block_size, policy.min_breakpoint_tokens, loader, self.counters
        )
        self._claims: dict[BlockHash, CacheHandle] = {}

    def open(self, settings: CacheSettings) -> CacheHandle:
        """A handle for a new request; cached whenever caching is on (its seed folds in the
        KV identity and the tenant)."""
        if not self.policy.enabled:
            return CacheHandle(settings, None, MatchReason.DISABLED)
        seed = seed_hash(self.kv_identity, settings.tenant)
        first = MatchReason.NOT_FOUND if settings.reads else MatchReason.NOT_READ
        return CacheHandle(settings, seed, first)

    def match(self, handle: CacheHandle, seq: TokenSource) -> CacheMatch:
        """Longest reusable cached prefix of `seq` — blocks in the pool, then copies in the
        lower tiers — or a `WAITING` match (another request computes more of it, or its
        lower blocks are being fetched)."""
        if handle.seed is None:
            return CacheMatch([], 0, 0, handle.first_reason)
        if not handle.settings.reads:  # computes all; its hashes are what it will write
            self._extend_hashes(handle, seq, seq.num_tokens // self.block_size)
            return CacheMatch([], 0, 0, MatchReason.NOT_READ)
        if handle.wanted and self.lower.fetching(handle.wanted):
            handle.waited_steps += 1  # its lower blocks are still being fetched
            return CacheMatch([], 0, 0, MatchReason.WAITING)
        bs = self.block_size
        n_blocks = seq.num_tokens // bs
        self._extend_hashes(handle, seq, n_blocks)
        hashes = handle.block_hashes[:n_blocks]
        matched = self.pool.match(hashes)
        lower = self.lower.run(hashes[len(matched) :])
        found = len(matched) + len(lower)
        bp = self.breakpoints.hit(handle, seq, found)
        implicit = handle.settings.mode is CacheMode.IMPLICIT
        matched_tokens = max(found * bs if implicit else 0, bp.position if bp else 0)
        hit = self._usable(seq, found * bs) if implicit else 0
        if implicit and self._worth_waiting(handle, seq, hashes, found, hit):
            handle.waited_steps += 1
            return CacheMatch([], 0, matched_tokens, MatchReason.WAITING)
        covered = bp.position if bp is not None else 0  # the hit holds this breakpoint
        if bp is not None and bp.position > hit:
            hit = bp.position
        else:
            bp = None
        n_hit = hit // bs
        blocks, lower = matched[:n_hit], lower[: max(0, n_hit - len(matched))]
        run = hashes[len(blocks) : n_hit]
        if bp is not None and bp.partial is not None and bp.location is not None:
            run, lower = [*run, bp.partial], [*lower, bp.location]
        got, reading = self.lower.fetch(handle, run, lower)
        if reading:
            handle.waited_steps += 1
            return CacheMatch([], 0, matched_tokens, MatchReason.WAITING)
        blocks, lower, partial, hit = self._settle(handle, blocks, lower, got, bp)
        reason = self._reason(handle, matched_tokens, hit)
        evicted = None
        if found < len(hashes):  # did the prefix go on, and leave for room?
            evicted = self.pool.recently_evicted(hashes[found])
        bp_tokens = covered if hit >= covered else 0
        partial_h = bp.partial if bp is not None and partial is not None else None
        return CacheMatch(
            blocks, hit, matched_tokens, reason, evicted, lower, partial, partial_h, bp_tokens
        )

    def peek(self, settings: CacheSettings, token_ids: list[int]) -> CachePeek:
        """What a request of `settings` and `token_ids` would reuse if admitted now: the
        match's pool and lower-tier run and breakpoints, changing nothing a request could
        see: nothing held, claimed, fetched, refreshed or counted, an expired pool block
        left in place (the lower tiers' lookups drop the expired entries they meet, which
        no request could reuse). A prefix another request is computing, or a lower-tier
        block whose read would fail, is not foreseen."""
        handle = self.open(settings)
        if handle.seed is None or not settings.reads:
            return CachePeek(0)
        seq = PromptTokens(token_ids)
        bs = self.block_size
        self._extend_hashes(handle, seq, seq.num_tokens // bs)
        hashes = handle.block_hashes
        in_pool = self.pool.peek(hashes)
        found = in_pool + len(self.lower.run(hashes[in_pool:]))
        bp = self.breakpoints.hit(handle, seq, found, peek=True)
        hit = self._usable(seq, found * bs) if settings.mode is CacheMode.IMPLICIT else 0
        if bp is None:
            return CachePeek(hit)
        return CachePeek(max(hit, bp.position), bp.position)

    def _settle(
        self,
        handle: CacheHandle,
        blocks: list[int],
        lower: list[Location],
        got: list[Location],
        bp: BreakpointHit | None,
    ) -> tuple[list[int], list[Location], Location | None, int]:
        """The match once its fetches are done (`got`: the part of `lower`, then the
        partial block, that could be fetched): blocks, loads, partial block, hit tokens. In
        explicit mode a hit short of the breakpoint (a file failed) is no hit at all."""
        bs = self.block_size
        partial = None
        if bp is not None and bp.partial is not None and len(got) == len(lower):
            got, partial = got[:-1], got[-1]
        hit = (len(blocks) + len(got)) * bs
        if partial is not None and bp is not None:
            hit = bp.position
        if handle.settings.mode is CacheMode.EXPLICIT and (bp is None or hit != bp.position):
            return [], [], None, 0
        return blocks, got, partial, hit

    def on_admit(self, handle: CacheHandle, match: CacheMatch, seq: TokenSource) -> None:
        """The scheduler placed the request on `match`'s blocks: hold them with the request's
        retention, record the hit (first admission only), claim the blocks left to compute.
        Reused blocks are offered to the tiers again (`store`: the disk keeps `24h` ones)."""
        bs, prompt_len, settings = self.block_size, seq.num_prompt_tokens, handle.settings
        for i, block_id in enumerate(match.block_ids):
            self.pool.acquire([block_id], settings.block_retention((i + 1) * bs))
        handle.num_registered_blocks = len(match.block_ids)
        if handle.hit_tokens is None:
            self._record_hit(handle, match, prompt_len)
        if handle.seed is not None:
            prompt_blocks = prompt_len // bs
            start = len(match.block_ids) + len(match.loads)
            for i in range(start, prompt_blocks):
                if settings.writes_block((i + 1) * bs):
                    self._claims.setdefault(handle.block_hashes[i], handle)
            for i, block_id in enumerate(match.block_ids):
                self._persist(handle, seq, i, block_id)

    def _record_hit(self, handle: CacheHandle, match: CacheMatch, prompt_len: int) -> None:
        """The first admission: what the request reuses, and from which tier."""
        bs = self.block_size
        handle.hit_tokens = match.hit_tokens
        handle.admission = match
        self.counters.queried_tokens += prompt_len
        self.counters.hit_tokens += match.hit_tokens
        tokens = dict.fromkeys(Tier, 0)
        for loc in match.loads:
            tokens[loc.tier] += bs
        if match.partial is not None:
            tokens[match.partial.tier] += match.hit_tokens % bs
        handle.host_tokens, handle.disk_tokens = tokens[Tier.HOST], tokens[Tier.DISK]
        for tier, n in tokens.items():
            self.counters.tier_hit_tokens[tier] += n
        if match.breakpoint_tokens:
            self.counters.breakpoint_hits += 1

    def load_lower(
        self,
        handle: CacheHandle,
        match: CacheMatch,
        seq: TokenSource,
        block_table: list[int],
        loader: Loader,
    ) -> None:
        """Give the match's lower-tier blocks pool blocks: allocate them, have
        `loader(location, hash, block_id)` copy each in, index them again, and append them
        to `block_table`; then copy the match's partial block (if any) into a block of the
        request's own (copy-on-write)."""
        where, h = match.partial, match.partial_hash
        if where is None or h is None:
            self._load_full(handle, match, seq, block_table, loader)
            return
        held = where.tier is Tier.DEVICE  # held first: loading the others may evict
        if held:
            self.pool.acquire([where.slot], self.pool.block_retention(where.slot))
        else:
            self.lower.pin([h])
        try:
            self._load_full(handle, match, seq, block_table, loader)
            (block_id,) = self.pool.allocate(1)
            loader(where, h, block_id)
        finally:
            if held:
                self.pool.free([where.slot])
            else:
                self.lower.unpin([h])
        block_table.append(block_id)

    def _load_full(
        self,
        handle: CacheHandle,
        match: CacheMatch,
        seq: TokenSource,
        block_table: list[int],
        loader: Loader,
    ) -> None:
        if not match.loads:
            return
        first = len(match.block_ids)
        hashes = handle.block_hashes[first : first + len(match.loads)]
        self.lower.pin(hashes)
        try:
            fresh = self.pool.allocate(len(hashes))  # may evict others into a lower tier
            for i, (h, loc, block_id) in enumerate(zip(hashes, match.loads, fresh, strict=True)):
                loader(loc, h, block_id)
                end = (first + i + 1) * self.block_size
                self.pool.register(block_id, h, handle.settings.block_retention(end))
        finally:
            self.lower.unpin(hashes)
        for i, block_id in enumerate(fresh, start=first):
            self._persist(handle, seq, i, block_id)
        block_table.extend(fresh)
        handle.num_registered_blocks = len(block_table)

    def _persist(self, handle: CacheHandle, seq: TokenSource, i: int, block_id: int) -> None:
        """Offer block `i` of the request (in pool block `block_id`) to the tiers."""
        retention = handle.settings.block_retention((i + 1) * self.block_size)
        if not self.lower.writes_through(retention):
            return
        assert handle.seed is not None
        parent = handle.block_hashes[i - 1] if i else handle.seed
        tokens = seq.tokens_slice(i * self.block_size, (i + 1) * self.block_size)
        self.lower.store(PoolBlock(handle.block_hashes[i], parent, tokens, block_id, retention))

    def cached_end(self, handle: CacheHandle, prompt_len: int) -> int:
        """Where the part of a `prompt_len`-token prompt that the request caches ends: its
        last full block (implicit mode) or its furthest breakpoint that will be written,
        whichever is later; 0 when it caches nothing. A prewarm computes only this far."""
        if handle.seed is None:
            return 0
        settings, low = handle.settings, self.policy.min_breakpoint_tokens
        ends = [b.position for b in settings.breakpoints if low <= b.position <= prompt_len]
        if settings.mode is CacheMode.IMPLICIT:
            ends.append(prompt_len // self.block_size * self.block_size)
        return max(ends, default=0)

    def on_computed(
        self, handle: CacheHandle, seq: TokenSource, block_table: Sequence[int], num_computed: int
    ) -> None:
        """Index the request's newly completed full blocks (prompt and generated; in
        explicit mode only those inside a breakpoint's prefix), then its breakpoints."""
        if handle.seed is None:
            return
        bs, settings = self.block_size, handle.settings
        full = num_computed // bs
        self._extend_hashes(handle, seq, full)
        hashes = handle.block_hashes
        prompt_len, hit = seq.num_prompt_tokens, handle.hit_tokens or 0
        for i in range(handle.num_registered_blocks, full):
            if self._claims.get(hashes[i]) is handle:
                del self._claims[hashes[i]]
            end = (i + 1) * bs
            if not settings.writes_block(end):
                continue
            if self.pool.register(block_table[i], hashes[i], settings.block_retention(end)):
                written = max(0, min(end, prompt_len) - max(i * bs, hit))
                handle.write_tokens += written
                self.counters.write_tokens += written
                self._persist(handle, seq, i, block_table[i])
        handle.num_registered_blocks = max(handle.num_registered_blocks, full)
        self.breakpoints.write(handle, seq, block_table, num_computed)

    def release(self, handle: CacheHandle) -> None:
        """Drop the request's claims (it finished, was aborted or was preempted); its blocks
        are freed by the caller."""
        for h in handle.block_hashes:
            if self._claims.get(h) is handle:
                del self._claims[h]
        handle.num_registered_blocks = 0

    def _usable(self, seq: TokenSource, matched_tokens: int) -> int:
        """Whole matched blocks within the request's reuse limit (short of the last known
        token, which is always computed when the request samples)."""
        last_full = seq.reuse_limit // self.block_size * self.block_size
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
