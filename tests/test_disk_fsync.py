"""The disk tier's `disk_fsync` policy, counted around real writes of a tiny model: `always`
fsyncs each file before its rename and then its folder, before the block is indexed;
`batch` fsyncs every written file and folder once, when its interval has passed (the
rest at close); `never` fsyncs nothing. `os.fsync` is wrapped to record what each call
synced (by the descriptor's path in /proc)."""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

import pytest

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.settings import CacheSettings, Retention
from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.engine.tiers.disk.index import DiskIndex
from promptcache.engine.tiers.disk.sync import Syncer
from promptcache.model.loading.loader import LoadedModel
from tests.api.inprocess import FakeClock
from tests.helpers import random_tokens

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")

INTERVAL = 60.0  # fake seconds; also the real seconds an idle writer waits between ticks


class Fsyncs:
    """`os.fsync`, recording the path each call synced and, for a block's file, whether
    the disk index already held that block."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[Path] = []
        self.indexed_before: list[bool] = []
        self.index: DiskIndex | None = None
        real = os.fsync

        def fsync(fd: int) -> None:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            self.paths.append(path)
            if path.suffix in (".tmp", ".kv") and self.index is not None:
                self.indexed_before.append(self.index.holds(BlockHash(bytes.fromhex(path.stem))))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def files(self) -> Counter[Path]:
        return Counter(p for p in self.paths if not p.is_dir())

    def folders(self) -> Counter[Path]:
        return Counter(p for p in self.paths if p.is_dir())


def _engine(model: LoadedModel, folder: Path, policy: str, clock: FakeClock) -> LLMEngine:
    per_block = 16 * model.spec.kv_bytes_per_token * 4
    config = EngineConfig(
        kv_cache_bytes=120 * per_block,
        host_cache_bytes=10 * per_block,
        disk_cache_dir=str(folder),
        disk_fsync=policy,
        disk_fsync_interval_s=INTERVAL,
    )
    return LLMEngine(model, config, clock=clock)


def _watch(fsyncs: Fsyncs, engine: LLMEngine) -> LLMEngine:
    assert engine.disk is not None
    fsyncs.index = engine.disk.index
    return engine


def _run(engine: LLMEngine, prompt: list[int]) -> None:
    settings = CacheSettings(retention=Retention("24h"))
    engine.submit(GenerationRequest(prompt, SamplingParams(max_tokens=2), settings))
    while engine.has_unfinished():
        engine.step()
    assert engine.disk is not None
    engine.disk.flush()  # every queued write done (and, under batch, any sync it made due)


def _files(engine: LLMEngine) -> set[Path]:
    assert engine.disk is not None
    return set(engine.disk.folder.glob("*/*.kv"))


def _expected_folders(engine: LLMEngine, files: set[Path], per_file: bool) -> Counter[Path]:
    """Each file's folder (once per file, or once), the tier's folder once per subfolder
    created (or once), and the folder above it once (the tier's folder at start)."""
    assert engine.disk is not None
    root = engine.disk.folder
    subfolders = Counter(p.parent for p in files)
    expected = subfolders if per_file else Counter(set(subfolders))
    expected[root] = len(subfolders) if per_file else 1
    expected[root.parent] = 1
    return expected


def test_always_syncs_each_file_and_folder_before_the_block_is_stored(
    tiny_long: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = Fsyncs(monkeypatch)
    engine = _watch(fsyncs, _engine(tiny_long, tmp_path / "kv", "always", FakeClock()))
    _run(engine, random_tokens(1300, seed=70))
    files = _files(engine)
    assert len(files) == 81 == engine.stats()["disk_writes_total"]
    # each file's bytes under its temporary name, before the rename: once each
    assert fsyncs.files() == Counter(p.with_suffix(".tmp") for p in files)
    assert fsyncs.indexed_before == [False] * 81  # synced before it counted as stored
    assert fsyncs.folders() == _expected_folders(engine, files, per_file=True)
    engine.close()
    assert len(fsyncs.paths) == 81 + sum(_expected_folders(engine, files, True).values())
    engine.check_integrity()


def test_batch_syncs_written_files_once_their_interval_has_passed(
    tiny_long: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs, clock = Fsyncs(monkeypatch), FakeClock()
    engine = _watch(fsyncs, _engine(tiny_long, tmp_path / "kv", "batch", clock))
    _run(engine, random_tokens(1300, seed=71))
    first = _files(engine)
    assert len(first) == 81 and fsyncs.paths == []  # written, not yet due
    clock.now += INTERVAL - 0.5
    _run(engine, random_tokens(300, seed=72))
    assert fsyncs.paths == []  # still within the interval
    clock.now += 1.0
    _run(engine, random_tokens(300, seed=73))  # its first write finds the sync due
    both = _files(engine)
    synced = set(fsyncs.files())
    assert len(both) == 81 + 18 + 18 and first < synced < both
    assert len(synced) == 81 + 18 + 1  # everything written before the due tick, and it
    assert fsyncs.files() == Counter(synced)  # each once, under its real name
    assert fsyncs.indexed_before == [True] * len(synced)  # batch: stored, then synced
    assert fsyncs.folders() == _expected_folders(engine, synced, per_file=False)
    engine.close()  # the rest at close: every file synced exactly once
    assert fsyncs.files() == Counter(both)
    engine.check_integrity()


def test_never_syncs_nothing(
    tiny_long: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs, clock = Fsyncs(monkeypatch), FakeClock()
    engine = _engine(tiny_long, tmp_path / "kv", "never", clock)
    _run(engine, random_tokens(1300, seed=74))
    clock.now += 2 * INTERVAL
    _run(engine, random_tokens(300, seed=75))
    engine.close()
    assert len(_files(engine)) == 81 + 18 and fsyncs.paths == []
    engine.check_integrity()


def test_always_counts_a_failed_folder_sync_as_a_failed_write(
    tiny_long: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fsync

    def folders_fail(fd: int) -> None:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).suffix == ".tmp":
            real(fd)
        else:
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", folders_fail)
    engine = _engine(tiny_long, tmp_path / "kv", "always", FakeClock())
    _run(engine, random_tokens(1300, seed=76))
    stats = engine.stats()
    assert stats["disk_write_failures_total"] == 81 and stats["disk_blocks"] == 0
    assert _files(engine) == set()  # no file left that was never durable
    engine.close()
    engine.check_integrity()


def test_batch_waits_at_most_its_interval_whichever_way_the_clock_jumps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs, clock = Fsyncs(monkeypatch), FakeClock()
    clock.now = 1000.0  # exact sums below
    syncer = Syncer("batch", 5.0, clock)
    assert syncer.wait_s() is None  # nothing noted: the writer sleeps until work comes
    (tmp_path / "ab").mkdir()
    block = tmp_path / "ab" / "block.kv"
    block.write_bytes(b"kv")
    syncer.written(block, new_folder=True)
    clock.now += 2.0
    assert syncer.wait_s() == 3.0
    syncer.tick()
    assert fsyncs.paths == []
    clock.now -= 3600.0  # the wall clock set back an hour: sync now, not an hour late
    assert syncer.wait_s() == 5.0
    syncer.tick()
    assert fsyncs.files() == Counter([block])
    assert fsyncs.folders() == Counter([tmp_path / "ab", tmp_path])
    assert syncer.wait_s() is None
