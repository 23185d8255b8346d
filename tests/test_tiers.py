"""The retention tiers speak one protocol (`cache.tiers.LowerTier`), through which the
prefix cache and the engine drive them without a branch for either; each reports its
own figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptcache.cache.tiers import LowerTier
from promptcache.engine.tiers.disk.tier import DiskTier
from promptcache.engine.tiers.host.tier import HostTier


def test_both_tiers_speak_the_protocol_and_report_their_own_figures(
    tiny_llama: Any, make_engine: Any, tmp_path: Path
) -> None:
    engine = make_engine(
        tiny_llama, host_cache_bytes=1 << 20, disk_cache_bytes=1 << 24, block_size=16
    )
    assert [type(t) for t in engine.tiers] == [HostTier, DiskTier]  # fastest first
    assert all(isinstance(t, LowerTier) for t in engine.tiers)
    assert engine.cache.lower.tiers == engine.tiers
    stats = engine.stats()
    for tier in engine.tiers:
        assert tier.stats().items() <= stats.items()
        assert stats[f"prompt_tokens_reused_from_{tier.tier.value}"] == 0


def test_an_engine_without_tiers_reports_their_empty_figures(
    tiny_llama: Any, make_engine: Any
) -> None:
    engine = make_engine(tiny_llama, host_cache_bytes=0, disk_cache_bytes=0)
    assert engine.tiers == []
    stats = engine.stats()
    assert HostTier.EMPTY_STATS.items() <= stats.items()
    assert DiskTier.EMPTY_STATS.items() <= stats.items()
    assert "prompt_tokens_reused_from_host" not in stats
