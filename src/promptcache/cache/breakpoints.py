"""Explicit breakpoints: cache entries that end exactly where the client said, and the
tenant's latest breakpoints that matching considers.

A breakpoint at token `p` caches the prompt's first `p` tokens, to the token. Its first
`p // B` blocks are ordinary full blocks (chain-hashed, shared with implicit caching); the
`r = p % B` tokens after them form a *partial block*, kept in a pool block of its own and
indexed like any block under

    partial_hash(parent, tokens) = sha256("promptcache-partial/1" | parent | tokens)

where `parent` is the chain hash of the block before it (or the tenant's seed), so tenants
stay apart and the tiers (host memory, disk) treat it like a full block. A request that
reuses a partial block copies it into a block of its own and computes on from token `p`
(copy-on-write): the cached partial block is never written again.

Matching considers a tenant's latest `LOOKBACK` (80) breakpoints, as OpenAI's API does. Each
names the hash of its prefix (the last full block's chain hash, or the partial hash) and
its length; a request matches it when its own prefix of that length hashes the same and
the entry's blocks are still cached.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.index import Location

LOOKBACK = 80  # breakpoints per tenant considered when matching (OpenAI's figure)
MAX_TENANTS = 65536  # tenants whose latest breakpoints are kept (least recent dropped)

_DOMAIN = b"promptcache-partial/1"


def partial_hash(parent: BlockHash, token_ids: Sequence[int]) -> BlockHash:
    """The key of a partial block: fewer than a block's tokens after `parent`."""
    data = b"".join(int(t).to_bytes(4, "little") for t in token_ids)
    return BlockHash(hashlib.sha256(_DOMAIN + parent + data).digest())


@dataclass(frozen=True, slots=True)
class BreakpointHit:
    """A breakpoint a request can reuse: its length, and (when it ends inside a block)
    the partial block's hash and where it lives."""

    position: int
    partial: BlockHash | None = None
    location: Location | None = None


class BreakpointBook:
    """Per tenant seed: the latest `lookback` breakpoints written (prefix hash -> length)."""

    def __init__(self, lookback: int = LOOKBACK, max_tenants: int = MAX_TENANTS) -> None:
        self.lookback = lookback
        self.max_tenants = max_tenants
        self._books: OrderedDict[BlockHash, OrderedDict[BlockHash, int]] = OrderedDict()

    def add(self, seed: BlockHash, prefix: BlockHash, position: int) -> None:
        """Record (or refresh) a breakpoint of the tenant with chain seed `seed`."""
        book = self._books.setdefault(seed, OrderedDict())
        self._books.move_to_end(seed)
        book[prefix] = position
        book.move_to_end(prefix)
        while len(book) > self.lookback:
            book.popitem(last=False)
        while len(self._books) > self.max_tenants:
            self._books.popitem(last=False)

    def latest(self, seed: BlockHash) -> list[tuple[BlockHash, int]]:
        """The tenant's breakpoints, newest first."""
        book = self._books.get(seed)
        return list(reversed(book.items())) if book else []
