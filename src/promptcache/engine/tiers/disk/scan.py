"""The disk tier at start: index the files earlier runs left, least recently used first
(last use = the file's mtime), and delete what cannot be served: `.tmp` leftovers of an
unfinished write, truncated or unreadable files, and files of another model or layout
(each counted)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from promptcache.cache.block_hash import BlockHash
from promptcache.engine.tiers.disk.file import SUFFIX, TMP_SUFFIX, BadFile, Identity, read_header
from promptcache.engine.tiers.disk.index import DiskIndex

log = logging.getLogger(__name__)


def scan(folder: Path, identity: Identity, index: DiskIndex) -> None:
    """Index the files under `folder` into `index`, least recently used first."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("disk tier: cannot create %s (%s): writes will fail", folder, exc)
        return
    found: list[tuple[float, BlockHash, int]] = []
    for path in folder.glob("??/*"):
        entry = _check(path, identity, index)
        if entry is not None:
            found.append(entry)
    for mtime, h, size in sorted(found):
        index.add(h, size, last_use=mtime)
    index.sweep()
    log.info("disk tier: %d blocks (%d bytes) in %s", len(found), index.bytes_used, folder)


def _check(path: Path, identity: Identity, index: DiskIndex) -> tuple[float, BlockHash, int] | None:
    if path.suffix == TMP_SUFFIX:
        path.unlink(missing_ok=True)  # a write the last run did not finish
        return None
    if path.suffix != SUFFIX:
        return None
    try:
        stat = path.stat()
        with open(path, "rb") as f:
            header = read_header(f, identity, stat.st_size)
        if header.block_hash.hex() != path.stem:
            raise BadFile("named for another block")
    except (BadFile, OSError) as exc:
        _discard(path, exc, index)
        return None
    return stat.st_mtime, header.block_hash, stat.st_size


def _discard(path: Path, exc: Exception, index: DiskIndex) -> None:
    log.warning("disk tier: dropping %s: %s", path.name, exc)
    if isinstance(exc, BadFile) and exc.foreign:
        index.counters.foreign += 1
    else:
        index.counters.corrupt += 1
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
