"""When the disk tier's files reach stable storage: the `disk_fsync` policy.

    never   nothing is fsynced; the OS writes files back when it chooses (Linux: dirty
            pages older than `vm.dirty_expire_centisecs`, 30 s by default), so a power
            loss or OS crash may take any file written since.
    batch   each file written, and each folder that gained a name, is noted; the notes
            are fsynced `interval` seconds after the first of them (and all at close), so
            a power loss takes at most the files of the last interval.
    always  a file is fsynced before it is renamed into place, then its folder (and the
            folder above, when the write created the folder), before the block is indexed:
            a power loss takes only the writes still queued.

A folder's entry lives in its parent, so a new folder is made durable by syncing the
parent. Whatever the policy, a file a power loss caught half-written is never loaded: a
wrong size fails the header check at start, wrong bytes the checksum when read (file.py).

Used by the disk tier's writer thread only; knows nothing of blocks, the index or queues.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by its name (raises `OSError`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Syncer:
    """Applies one `disk_fsync` policy ("never", "batch" or "always") to written files."""

    def __init__(self, policy: str, interval_s: float, clock: Callable[[], float]) -> None:
        """`clock`: seconds (the engine's clock; tests pass a fake one)."""
        self.policy = policy
        self.interval = interval_s
        self.clock = clock
        self._files: set[Path] = set()  # batch: written since the last sync
        self._folders: set[Path] = set()  # batch: gained a name since the last sync
        self._due: float | None = None  # batch: when the notes must be synced

    @property
    def syncs_each_file(self) -> bool:
        """Whether a file is fsynced before its rename (`write_file(sync=...)`)."""
        return self.policy == "always"

    def created(self, folder: Path) -> None:
        """`folder` may have just been created: make its entry durable."""
        self._note_folders([folder.parent])

    def written(self, path: Path, new_folder: bool) -> None:
        """`path` was renamed into place; `new_folder`: this write created its folder.
        Under "always" syncs now (raises `OSError`: the block must not count as stored)."""
        folders = [path.parent, path.parent.parent] if new_folder else [path.parent]
        if self.policy == "batch":
            self._files.add(path)
        self._note_folders(folders)

    def wait_s(self) -> float | None:
        """Seconds until the next batch sync is due (None: nothing to sync)."""
        if self._due is None:
            return None
        return min(self.interval, max(0.0, self._due - self.clock()))

    def tick(self) -> None:
        """Sync the notes if their time has come (or the clock was set back past their
        first note: a wall clock may jump, and the wait must stay within the interval)."""
        if self._due is None:
            return
        now = self.clock()
        if now >= self._due or now < self._due - self.interval:
            self.sync_all()

    def sync_all(self) -> None:
        """Sync every note now: files first, then the folders naming them."""
        files, folders = sorted(self._files), sorted(self._folders)
        self._files, self._folders, self._due = set(), set(), None
        _sync_each(files, missing_ok=True)  # a file evicted meanwhile needs nothing
        _sync_each(folders, missing_ok=False)

    def _note_folders(self, folders: list[Path]) -> None:
        if self.policy == "always":
            for folder in folders:
                fsync_path(folder)
        elif self.policy == "batch":
            self._folders.update(folders)
            if self._due is None:
                self._due = self.clock() + self.interval


def _sync_each(paths: Iterable[Path], missing_ok: bool) -> None:
    for path in paths:
        try:
            fsync_path(path)
        except FileNotFoundError:
            if not missing_ok:
                log.warning("disk tier: %s vanished before its fsync", path)
        except OSError as exc:
            log.warning("disk tier: fsync of %s failed: %s", path, exc)
