"""The disk tier: `24h` blocks written through to checksummed files, hit after the pool
and the host tier turned over and after a restart; bad files are misses that are removed
and counted; a full or unwritable folder keeps the engine serving; tenants stay apart."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import torch

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.settings import CacheSettings, Retention
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.engine.tiers.disk import tier as disk_tier
from promptcache.engine.tiers.disk.file import (
    BadFile,
    Header,
    Identity,
    Layout,
    checksum,
    payload_view,
    read_block,
    read_header,
    write_file,
)
from promptcache.engine.tiers.disk.index import DiskIndex
from promptcache.model.loading.loader import LoadedModel
from tests.helpers import FakeClock, random_tokens, run_one

SIX = SamplingParams(max_tokens=6, temperature=0)


def _per_block(model: LoadedModel) -> int:
    return 16 * model.spec.kv_bytes_per_token * 4


def _engine(make_engine: Any, model: LoadedModel, folder: Path, **config: Any) -> LLMEngine:
    """A 120-block pool, a 10-block host tier and a disk tier in `folder`."""
    per_block = _per_block(model)
    config.setdefault("host_cache_bytes", 10 * per_block)
    return make_engine(  # type: ignore[no-any-return]
        model, kv_cache_bytes=120 * per_block, disk_cache_dir=str(folder), **config
    )


def _run(
    engine: LLMEngine, prompt: list[int], retention: str = "24h", tenant: str | None = None
) -> RequestOutput:
    settings = CacheSettings(tenant=tenant, retention=Retention(retention))
    final = run_one(engine, GenerationRequest(prompt, SIX, settings))
    if engine.disk is not None:
        engine.disk.flush()  # deterministic tests: every queued write is on disk
    return final


def _expected(make_engine: Any, model: LoadedModel, prompt: list[int]) -> list[int]:
    off = make_engine(model, kv_cache_bytes=16 << 20, enable_prefix_caching=False)
    return _run(off, prompt).token_ids


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*/*/*.kv"))


def _file_of_block(engine: LLMEngine, folder: Path, prompt: list[int], i: int) -> Path:
    """The file holding block `i` of `prompt` (found by the token ids in its header)."""
    assert engine.disk is not None
    for path in _files(folder):
        with open(path, "rb") as f:
            header = read_header(f, engine.disk.identity, path.stat().st_size)
        if header.token_ids == prompt[i * 16 : (i + 1) * 16]:
            return path
    raise AssertionError(f"no file for block {i}")


def test_24h_prefix_hits_from_pool_host_and_disk(
    tiny_long: LoadedModel, make_engine: Any, tmp_path: Path
) -> None:
    a, b = random_tokens(1300, seed=50), random_tokens(1300, seed=51)
    expected = _expected(make_engine, tiny_long, a)
    engine = _engine(make_engine, tiny_long, tmp_path / "kv")
    first = _run(engine, a)
    assert first.token_ids == expected
    stats = engine.stats()
    assert stats["disk_writes_total"] == 81 == stats["disk_blocks"]  # written through at once
    _run(engine, b, "in_memory")  # turns the pool over: A's tail leaves for host, then disk
    again = _run(engine, a)
    assert again.token_ids == expected  # KV from three tiers: identical float32 output
    assert again.usage.reused_tokens == 1296 and again.usage.cached_tokens == 1280
    assert again.cache is not None
    assert again.cache.reused_from_host == 10 * 16  # the host tier holds 10 blocks
    assert again.cache.reused_from_disk > 0
    stats = engine.stats()
    assert stats["prompt_tokens_reused_from_disk"] == again.cache.reused_from_disk
    assert stats["disk_loads_total"] * 16 == again.cache.reused_from_disk
    assert stats["disk_corrupt_total"] == 0
    assert engine.disk is not None
    engine.disk.index.check_integrity()


def test_in_memory_prompts_write_nothing(
    tiny_long: LoadedModel, make_engine: Any, tmp_path: Path
) -> None:
    engine = _engine(make_engine, tiny_long, tmp_path / "kv")
    _run(engine, random_tokens(1300, seed=52), "in_memory")
    assert engine.stats()["disk_writes_total"] == 0
    assert _files(tmp_path / "kv") == []


def test_24h_prefix_survives_a_restart(
    tiny_long: LoadedModel, make_engine: Any, tmp_path: Path
) -> None:
    a = random_tokens(1300, seed=53)
    expected = _expected(make_engine, tiny_long, a)
    folder = tmp_path / "kv"
    _run(_engine(make_engine, tiny_long, folder), a)
    assert len(_files(folder)) == 81
    restarted = _engine(make_engine, tiny_long, folder)
    assert restarted.stats()["disk_blocks"] == 81  # the index rebuilt from the headers
    again = _run(restarted, a)
    assert again.token_ids == expected
    assert again.usage.reused_tokens == 1296 and again.cache is not None
    assert again.cache.reused_from_disk == 1296


def test_bad_files_are_misses_removed_and_counted(
    tiny_long: LoadedModel, make_engine: Any, tmp_path: Path
) -> None:
    a = random_tokens(1300, seed=54)
    expected = _expected(make_engine, tiny_long, a)
    folder = tmp_path / "kv"
    first = _engine(make_engine, tiny_long, folder)
    _run(first, a)
    assert first.disk is not None
    truncated = _file_of_block(first, folder, a, 40)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    foreign = _file_of_block(first, folder, a, 20)
    _rewrite_as_another_model(foreign, first.disk.identity)
    stray = truncated.parent / "half-written.tmp"  # a write a crash interrupted
    stray.write_bytes(b"partial")

    second = _engine(make_engine, tiny_long, folder)
    stats = second.stats()
    assert (stats["disk_corrupt_total"], stats["disk_foreign_total"]) == (1, 1)
    assert not truncated.exists() and not foreign.exists() and not stray.exists()
    out = _run(second, a)
    assert out.token_ids == expected and out.usage.reused_tokens == 20 * 16  # up to block 20

    assert second.disk is not None
    flipped = _file_of_block(second, folder, a, 10)
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF  # one payload byte
    flipped.write_bytes(bytes(data))
    third = _engine(make_engine, tiny_long, folder)
    out = _run(third, a)  # read, checksum fails: that block and the rest are computed
    assert out.token_ids == expected and out.usage.reused_tokens == 10 * 16
    assert third.stats()["disk_corrupt_total"] == 1
    assert third.disk is not None  # deleted, then written again by the recompute: valid now
    h = BlockHash(bytes.fromhex(flipped.stem))
    assert read_block(flipped, third.disk.identity, h)[0].shape == third.disk.identity.layout.shape


def _rewrite_as_another_model(path: Path, identity: Identity) -> None:
    with open(path, "rb") as f:
        header = read_header(f, identity, path.stat().st_size)
    block, _ = read_block(path, identity, header.block_hash)
    other = Identity(identity.kv_identity, "another-model", identity.layout)
    write_file(path, other, header, payload_view(block))


def test_full_disk_keeps_serving(tiny_long: LoadedModel, make_engine: Any, tmp_path: Path) -> None:
    a = random_tokens(1300, seed=55)
    expected = _expected(make_engine, tiny_long, a)
    engine = _engine(make_engine, tiny_long, tmp_path / "kv", disk_min_free_bytes=1 << 60)
    assert _run(engine, a).token_ids == expected
    stats = engine.stats()
    assert stats["disk_write_failures_total"] == 81 and stats["disk_blocks"] == 0
    assert _run(engine, a).usage.reused_tokens == 1296  # the pool still serves


def test_unwritable_folder_keeps_serving(
    tiny_long: LoadedModel, make_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(*args: Any) -> int:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(disk_tier, "write_file", read_only)
    a = random_tokens(1300, seed=56)
    expected = _expected(make_engine, tiny_long, a)
    engine = _engine(make_engine, tiny_long, tmp_path / "kv")
    assert _run(engine, a).token_ids == expected
    assert engine.stats()["disk_write_failures_total"] == 81


def test_folder_that_cannot_exist_keeps_serving(
    tiny_long: LoadedModel, make_engine: Any, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    engine = _engine(make_engine, tiny_long, blocker / "kv")
    a = random_tokens(1300, seed=57)
    assert _run(engine, a).usage.reused_tokens == 0
    assert engine.stats()["disk_write_failures_total"] == 81


def test_budget_drops_least_recently_used_files(
    tiny_long: LoadedModel, make_engine: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "kv"
    file_bytes = _per_block(tiny_long) + 2048
    engine = _engine(make_engine, tiny_long, folder, disk_cache_bytes=60 * file_bytes)
    a = random_tokens(1300, seed=58)
    _run(engine, a)
    stats = engine.stats()
    assert stats["disk_bytes"] <= 60 * file_bytes and stats["disk_evicted_total"] > 0
    assert stats["disk_blocks"] == len(_files(folder)) < 81
    assert engine.disk is not None
    engine.disk.index.check_integrity()


def test_tenants_never_load_each_others_files(
    tiny_long: LoadedModel, make_engine: Any, tmp_path: Path
) -> None:
    a = random_tokens(1300, seed=59)
    folder = tmp_path / "kv"
    _run(_engine(make_engine, tiny_long, folder), a, tenant="tenant-a")
    restarted = _engine(make_engine, tiny_long, folder)  # only the disk holds A's blocks
    other = _run(restarted, a, tenant="tenant-b")
    assert other.usage.reused_tokens == 0 and restarted.stats()["disk_reads_total"] == 0
    mine = _run(restarted, a, tenant="tenant-a")
    assert mine.usage.reused_tokens == 1296


# -- the file format and the index, without an engine ------------------------------------


def _identity() -> Identity:
    return Identity("kv-id", "model-fp", Layout("float32", 4, 2, 1, 8))


def test_file_round_trip_and_checks(tmp_path: Path) -> None:
    identity = _identity()
    block = torch.randn(identity.layout.shape)
    payload = payload_view(block)
    h, parent = BlockHash(b"\x01" * 32), BlockHash(b"\x00" * 32)
    header = Header(h, parent, [5, 6, 7, 8], len(payload), checksum(payload))
    path = tmp_path / "01" / "block.kv"
    path.parent.mkdir()
    size = write_file(path, identity, header, payload)
    assert size == path.stat().st_size and not list(tmp_path.glob("*/*.tmp"))
    back, read = read_block(path, identity, h)
    assert torch.equal(back, block) and read == size
    with pytest.raises(BadFile, match="another block"):
        read_block(path, identity, parent)
    other_layout = Identity("kv-id", "model-fp", Layout("bfloat16", 4, 2, 1, 8))
    with pytest.raises(BadFile) as info:
        read_block(path, other_layout, h)
    assert info.value.foreign


def test_index_lru_budget_and_expiry() -> None:
    clock = FakeClock(1000.0)
    dropped: list[BlockHash] = []
    index = DiskIndex(ttl=100, on_drop=dropped.append, clock=clock)
    hashes = [BlockHash(bytes([i]) * 32) for i in range(4)]
    for h in hashes:
        index.add(h, 10)
        clock.now += 1
    index.touch(hashes[0])  # now the most recently used
    assert index.evict_for(10, budget=30) == hashes[1:3]
    assert index.bytes_used == 20 and index.counters.evicted == 2
    clock.now += 101
    assert not index.holds(hashes[3]) and dropped == [hashes[3]]
    assert index.sweep() == [hashes[0]] and len(index) == 0
    assert index.counters.expired == 2
    index.check_integrity()
