"""Bookkeeping of the disk tier: which chain hashes have a file, how big, least recently
used first, within a byte budget.

The disk tier keeps `24h` blocks in files so they outlive the KV pool, the host tier and the
process. This module only knows hashes, sizes and times (the files are `tier.py`'s,
beside it). Three threads use it (the engine's, the disk writer's and
the disk reader's), so every method takes the index's lock. An entry expires `ttl` seconds
after its last use, like a `24h` block in the pool; dropping an entry calls `on_drop` so
its file is deleted.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from promptcache.cache.block_hash import BlockHash

STAMP_INTERVAL_S = 600.0  # refresh a file's mtime (its last use after a restart) this often


@dataclass(slots=True)
class DiskEntry:
    nbytes: int  # the file's size
    last_use: float  # unix time
    stamped: float  # last use as written to the file's mtime


@dataclass(slots=True)
class DiskCounters:
    writes: int = 0  # files written
    write_failures: int = 0  # writes refused (budget, free-space floor) or failed (OS error)
    writes_dropped: int = 0  # writes skipped because the writer's queue was full
    reads: int = 0  # files read (and verified) for a request
    loads: int = 0  # blocks copied into the KV pool for a request
    bytes_written: int = 0
    bytes_read: int = 0
    evicted: int = 0  # files deleted for room (least recently used first)
    expired: int = 0  # files deleted because their retention ran out
    corrupt: int = 0  # files deleted: bad checksum, truncated, unreadable header
    foreign: int = 0  # files deleted: another model fingerprint or KV layout


class DiskIndex:
    """Hash -> file entry, LRU, idle expiry, byte accounting; thread-safe."""

    def __init__(
        self,
        ttl: float,
        on_drop: Callable[[BlockHash], None] = lambda h: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.on_drop = on_drop
        self.counters = DiskCounters()
        self._entries: OrderedDict[BlockHash, DiskEntry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def holds(self, h: BlockHash) -> bool:
        """Whether `h` has a file (an expired entry is dropped on the way)."""
        with self._lock:
            entry = self._entries.get(h)
            if entry is None:
                return False
            if self.clock() - entry.last_use <= self.ttl:
                return True
            self._remove(h)
            self.counters.expired += 1
        self.on_drop(h)
        return False

    def touch(self, h: BlockHash) -> bool:
        """`h` was used: most recently used now. True when its file's mtime is due a
        refresh (so the last use survives a restart)."""
        with self._lock:
            entry = self._entries.get(h)
            if entry is None:
                return False
            entry.last_use = self.clock()
            self._entries.move_to_end(h)
            if entry.last_use - entry.stamped < STAMP_INTERVAL_S:
                return False
            entry.stamped = entry.last_use
            return True

    def add(self, h: BlockHash, nbytes: int, last_use: float | None = None) -> None:
        """A file for `h` now exists (written, or found at start in last-use order)."""
        when = self.clock() if last_use is None else last_use
        with self._lock:
            old = self._entries.pop(h, None)
            self._bytes += nbytes - (old.nbytes if old else 0)
            self._entries[h] = DiskEntry(nbytes, when, when)

    def remove(self, h: BlockHash) -> bool:
        """Forget `h` (its file is gone or bad); False if it was not held."""
        with self._lock:
            return self._remove(h)

    def evict_for(self, nbytes: int, budget: int, keep: BlockHash | None = None) -> list[BlockHash]:
        """Drop least recently used entries until `nbytes` more fit in `budget`; returns
        them (their files are the caller's to delete)."""
        dropped: list[BlockHash] = []
        with self._lock:
            for h in list(self._entries):
                if self._bytes + nbytes <= budget:
                    break
                if h != keep:
                    self._remove(h)
                    dropped.append(h)
            self.counters.evicted += len(dropped)
        return dropped

    def oldest(self) -> BlockHash | None:
        """The least recently used hash (the next to go for room)."""
        with self._lock:
            return next(iter(self._entries), None)

    def sweep(self) -> list[BlockHash]:
        """Drop every expired entry (the oldest come first); returns them."""
        now = self.clock()
        dropped: list[BlockHash] = []
        with self._lock:
            for h, entry in list(self._entries.items()):
                if now - entry.last_use <= self.ttl:
                    break
                self._remove(h)
                dropped.append(h)
            self.counters.expired += len(dropped)
        for h in dropped:
            self.on_drop(h)
        return dropped

    def _remove(self, h: BlockHash) -> bool:
        entry = self._entries.pop(h, None)
        if entry is None:
            return False
        self._bytes -= entry.nbytes
        return True

    def check_integrity(self) -> None:
        with self._lock:
            assert self._bytes == sum(e.nbytes for e in self._entries.values()), "bytes off"
            uses = [e.last_use for e in self._entries.values()]
            assert uses == sorted(uses), "disk entries out of LRU order"
