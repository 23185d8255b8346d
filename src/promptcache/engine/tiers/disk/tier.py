"""The disk tier: `24h` blocks in checksummed files under `disk_cache_dir`, surviving
restarts, read and written off the engine thread.

    engine thread   store(): copy a 24h block out of the pool    -> writer queue
                    fetch(): hashes a request will reuse        -> reader queue
                    load(): a staged (read, verified) block     -> a pool block
    writer thread   evict least recently used files for room, check the free-space floor,
                    write the file (temporary name, then rename), fsync it as `disk_fsync`
                    says (sync.py), index it
    reader thread   read a file, verify header and checksum, stage the tensor

Write-through: a `24h` block is written soon after it is computed (or reused), not only
when memory fills, so a `kill -9` loses at most the writes still queued (a power loss, also
what `disk_fsync` leaves unsynced). At start the index is rebuilt from the files' headers
(last use = the file's mtime); `.tmp` leftovers, truncated files and files of another model
or layout are deleted and counted. A file that fails its checksum when read is deleted and
counted, and the request computes that block instead: slower, never wrong. A full or
read-only folder keeps the server serving: its writes are counted as failed.

Files live in `<disk_cache_dir>/<first 16 hex digits of the KV identity>/`, so models
sharing one `disk_cache_dir` never touch each other's files. Format: `file.py`. It speaks
`promptcache.cache.tiers.LowerTier`: `store` writes `24h` blocks through, `fetch` reads
files in the background, and a block is `ready` once read and verified.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.evictions import EvictedBlock
from promptcache.cache.index import Location, Tier
from promptcache.cache.settings import Retention
from promptcache.cache.tiers import PoolBlock
from promptcache.engine.kv_cache import KVCache
from promptcache.engine.tiers.disk.file import (
    BadFile,
    Header,
    Identity,
    checksum,
    path_for,
    payload_view,
    read_block,
    write_file,
)
from promptcache.engine.tiers.disk.index import DiskIndex
from promptcache.engine.tiers.disk.scan import scan
from promptcache.engine.tiers.disk.sync import Syncer

log = logging.getLogger(__name__)

WRITE_QUEUE_BYTES = 512 * 1024**2  # block copies waiting for the writer; more are dropped
STAGE_TTL_S = 60.0  # a read block nobody loaded within this long is dropped
SWEEP_INTERVAL_S = 5.0  # how often expired files and stale staged blocks are looked for
HEADER_SLACK = 4096  # bytes allowed for a file's header when checking room before a write


@dataclass(slots=True)
class _Write:
    h: BlockHash
    parent: BlockHash
    token_ids: list[int]
    block: torch.Tensor


@dataclass(slots=True)
class _Delete:
    h: BlockHash


@dataclass(slots=True)
class _Stamp:
    h: BlockHash  # refresh the file's mtime: its last use, should the process restart


_Op = _Write | _Delete | _Stamp | None


class DiskTier:
    """Files of `24h` KV blocks, with one writer and one reader thread."""

    tier = Tier.DISK
    # stats() of an engine with no disk tier
    EMPTY_STATS: ClassVar[dict[str, int]] = {"disk_blocks": 0, "disk_bytes": 0}

    def __init__(
        self,
        kv_cache: KVCache,
        folder: Path,
        identity: Identity,
        index: DiskIndex,
        budget_bytes: int,
        min_free_bytes: int,
        stage_bytes: int,
        syncer: Syncer,
    ) -> None:
        self.kv = kv_cache
        self.folder = folder
        self.identity = identity
        self.index = index
        index.on_drop = self._delete_later
        self.budget = budget_bytes
        self.min_free = min_free_bytes
        self.block_bytes = kv_cache.bytes_per_block
        self.stage_limit = max(1, stage_bytes // self.block_bytes)
        self._lock = threading.Lock()
        self._pending: set[BlockHash] = set()  # queued writes
        self._reading: set[BlockHash] = set()  # queued or in-flight reads
        self._staged: OrderedDict[BlockHash, tuple[torch.Tensor, float]] = OrderedDict()
        self._idle = threading.Condition(self._lock)  # notified when no read is queued
        self._last_sweep = 0.0
        self._writes: queue.Queue[_Op] = queue.Queue()
        self._reads: queue.Queue[BlockHash | None] = queue.Queue()
        scan(folder, identity, index)
        self.syncer = syncer
        self._sync_folder()
        self._threads = [
            threading.Thread(target=self._writer, name="promptcache-disk-writer", daemon=True),
            threading.Thread(target=self._reader, name="promptcache-disk-reader", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- engine thread ------------------------------------------------------------------

    def lookup(self, h: BlockHash) -> Location | None:
        return Location(Tier.DISK, -1) if self.index.holds(h) else None

    def writes_through(self, retention: Retention) -> bool:
        return retention.on_disk

    def store(self, block: PoolBlock) -> None:
        """Write-through of a `24h` block: queue a copy of it for writing, unless a file
        already holds it (then it is only marked used)."""
        h = block.block_hash
        if not block.retention.on_disk:
            return
        if self.index.holds(h):
            if self.index.touch(h):
                self._writes.put(_Stamp(h))
            return
        with self._lock:
            if h in self._pending:
                return
            if (len(self._pending) + 1) * self.block_bytes > WRITE_QUEUE_BYTES:
                self.index.counters.writes_dropped += 1
                return
            self._pending.add(h)
        layout = self.identity.layout
        copy = torch.empty(layout.shape, dtype=layout.torch_dtype)
        copy.copy_(self.kv.data[:, :, :, block.block_id])
        self._writes.put(_Write(h, block.parent, block.token_ids, copy))

    def on_evict(self, block: EvictedBlock) -> None:
        """Nothing to do: `24h` blocks were written through when computed or reused."""

    def fetch(self, hashes: list[BlockHash]) -> None:
        """Have these blocks' files read and verified in the background."""
        with self._lock:
            todo = [h for h in hashes if h not in self._staged and h not in self._reading]
            self._reading.update(todo)
        for h in todo:
            self._reads.put(h)

    def fetching(self, hashes: list[BlockHash]) -> bool:
        with self._lock:  # reads finish in queue order: the last is the likeliest pending
            return any(h in self._reading for h in reversed(hashes))

    def pin(self, hashes: list[BlockHash]) -> None:
        """A staged block stays staged until loaded (or stale): nothing to pin."""

    def unpin(self, hashes: list[BlockHash]) -> None:
        """See `pin`."""

    def ready(self, h: BlockHash) -> bool:
        with self._lock:
            return h in self._staged

    def load(self, where: Location, h: BlockHash, block_id: int) -> None:
        """Copy staged block `h` into pool block `block_id` (the match saw it ready)."""
        with self._lock:
            block, _ = self._staged.pop(h)
        self.kv.data[:, :, :, block_id].copy_(block)
        self.index.counters.loads += 1
        if self.index.touch(h):
            self._writes.put(_Stamp(h))

    def wait(self, timeout: float) -> None:
        """Block until every queued read is done, or `timeout` seconds (instead of
        spinning, and instead of re-matching the waiting requests after each file)."""
        with self._idle:
            self._idle.wait_for(lambda: not self._reading, timeout)

    def sweep(self, now: float | None = None) -> None:
        """Drop expired files and staged blocks nobody loaded (every few seconds)."""
        now = time.monotonic() if now is None else now
        if now - self._last_sweep < SWEEP_INTERVAL_S:
            return
        self._last_sweep = now
        self.index.sweep()
        with self._lock:
            stale = [h for h, (_, at) in self._staged.items() if now - at > STAGE_TTL_S]
            for h in stale:
                del self._staged[h]

    def flush(self) -> None:
        """Wait until every queued write and delete is done."""
        self._writes.join()

    def close(self) -> None:
        """Finish queued writes, then stop both threads."""
        self._writes.put(None)
        self._reads.put(None)
        for t in self._threads:
            t.join(30)

    @property
    def staged_bytes(self) -> int:
        return len(self._staged) * self.block_bytes

    def stats(self) -> dict[str, int]:
        c = self.index.counters
        return {
            "disk_blocks": len(self.index),
            "disk_bytes": self.index.bytes_used,
            "disk_budget_bytes": self.budget,
            "disk_staged_bytes": self.staged_bytes,
            "disk_writes_total": c.writes,
            "disk_write_failures_total": c.write_failures,
            "disk_writes_dropped_total": c.writes_dropped,
            "disk_reads_total": c.reads,
            "disk_loads_total": c.loads,
            "disk_bytes_written_total": c.bytes_written,
            "disk_bytes_read_total": c.bytes_read,
            "disk_evicted_total": c.evicted,
            "disk_expired_total": c.expired,
            "disk_corrupt_total": c.corrupt,
            "disk_foreign_total": c.foreign,
        }

    def check_integrity(self) -> None:
        self.index.check_integrity()

    # -- writer thread ------------------------------------------------------------------

    def _sync_folder(self) -> None:
        """Make the folder's own entry durable (scan may just have created it)."""
        try:
            self.syncer.created(self.folder)
        except OSError as exc:
            log.warning("disk tier: cannot fsync the folder above %s: %s", self.folder, exc)

    def _writer(self) -> None:
        while True:
            try:
                op = self._writes.get(timeout=self.syncer.wait_s())
            except queue.Empty:  # idle: written files still get their batch sync
                self.syncer.tick()
                continue
            try:
                if op is None:
                    self.syncer.sync_all()  # nothing written is left unsynced at close
                    return
                self._apply(op)
                self.syncer.tick()  # before task_done: `flush()` also waits for the sync
            except Exception:  # never let one file stop the writer
                log.exception("disk tier: write failed")
                self.index.counters.write_failures += 1
            finally:
                if isinstance(op, _Write):
                    with self._lock:
                        self._pending.discard(op.h)
                self._writes.task_done()

    def _apply(self, op: _Write | _Delete | _Stamp) -> None:
        path = path_for(self.folder, op.h)
        if isinstance(op, _Delete):
            path.unlink(missing_ok=True)
        elif isinstance(op, _Stamp):
            with contextlib.suppress(FileNotFoundError):  # evicted meanwhile
                os.utime(path)
        else:
            self._write(op, path)

    def _write(self, op: _Write, path: Path) -> None:
        payload = payload_view(op.block)
        need = len(payload) + HEADER_SLACK
        for h in self.index.evict_for(need, self.budget):
            path_for(self.folder, h).unlink(missing_ok=True)
        if need > self.budget or not self._room_on_disk(need):
            self.index.counters.write_failures += 1
            return
        header = Header(op.h, op.parent, op.token_ids, len(payload), checksum(payload))
        size = self._write_durably(path, header, payload)
        if size is None:
            self.index.counters.write_failures += 1
            return
        self.index.add(op.h, size)
        self.index.counters.writes += 1
        self.index.counters.bytes_written += size

    def _write_durably(self, path: Path, header: Header, payload: memoryview) -> int | None:
        """Write the file and sync it as the policy says; its size, or None if it failed
        (then no file is left under its name)."""
        new_folder = not path.parent.exists()
        try:
            size = write_file(path, self.identity, header, payload, self.syncer.syncs_each_file)
        except OSError as exc:
            log.warning("disk tier: cannot write %s: %s", path, exc)
            return None
        try:
            self.syncer.written(path, new_folder)
        except OSError as exc:
            log.warning("disk tier: cannot fsync %s: %s", path, exc)
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)  # not durable as promised: not stored
            return None
        return size

    def _room_on_disk(self, need: int) -> bool:
        """Keep `min_free` bytes free on the folder's filesystem, dropping our oldest files
        if that makes room; False if it cannot."""
        while True:
            try:
                free = shutil.disk_usage(self.folder).free
            except OSError:
                return False
            if free - need >= self.min_free:
                return True
            oldest = self.index.oldest()
            if oldest is None or not self.index.remove(oldest):
                return False
            self.index.counters.evicted += 1
            path_for(self.folder, oldest).unlink(missing_ok=True)

    def _delete_later(self, h: BlockHash) -> None:
        self._writes.put(_Delete(h))

    # -- reader thread ------------------------------------------------------------------

    def _reader(self) -> None:
        while True:
            h = self._reads.get()
            if h is None:
                return
            try:
                self._read(h)
            except Exception:
                log.exception("disk tier: read failed")
            finally:
                with self._lock:
                    self._reading.discard(h)
                    if not self._reading:
                        self._idle.notify_all()

    def _read(self, h: BlockHash) -> None:
        with self._lock:
            if len(self._staged) >= self.stage_limit:
                return  # the request reuses what was staged and computes the rest
        path = path_for(self.folder, h)
        try:
            block, size = read_block(path, self.identity, h)
        except FileNotFoundError:
            self.index.remove(h)  # evicted for room meanwhile
            return
        except (BadFile, OSError) as exc:
            self._discard(h, path, exc)
            return
        with self._lock:
            self._staged[h] = (block, time.monotonic())
        self.index.counters.reads += 1
        self.index.counters.bytes_read += size

    def _discard(self, h: BlockHash, path: Path, exc: Exception) -> None:
        log.warning("disk tier: dropping %s: %s", path.name, exc)
        self.index.remove(h)
        foreign = isinstance(exc, BadFile) and exc.foreign
        if foreign:
            self.index.counters.foreign += 1
        else:
            self.index.counters.corrupt += 1
        path.unlink(missing_ok=True)
