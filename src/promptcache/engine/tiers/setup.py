"""The configured retention tiers, built in order (host memory, then disk: fastest first),
and their figures gathered for `LLMEngine.stats()`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from promptcache.cache.expiry import RetentionPolicy
from promptcache.cache.index import Tier
from promptcache.cache.tiers import LowerTier
from promptcache.config import EngineConfig, default_data_dir
from promptcache.engine.kv_cache import KVCache
from promptcache.engine.tiers.disk.file import Identity, Layout
from promptcache.engine.tiers.disk.index import DiskIndex
from promptcache.engine.tiers.disk.sync import Syncer
from promptcache.engine.tiers.disk.tier import DiskTier
from promptcache.engine.tiers.host.index import HostIndex
from promptcache.engine.tiers.host.tier import HostTier
from promptcache.model.spec import ModelSpec

KINDS = (HostTier, DiskTier)  # every kind of tier, fastest first


def host_tier(
    c: EngineConfig, kv: KVCache, retention: RetentionPolicy, clock: Callable[[], float]
) -> HostTier | None:
    """The host tier of `host_cache_bytes`, or None (no budget, or caching off)."""
    slots = HostTier.slots_for(kv, c.host_cache_bytes)
    if not c.enable_prefix_caching or slots == 0:
        return None
    return HostTier(kv, HostIndex(slots, c.extended_ttl, clock), retention.idle_ttl)


def disk_tier(
    c: EngineConfig,
    kv: KVCache,
    spec: ModelSpec,
    identity: tuple[str, str],
    clock: Callable[[], float],
) -> DiskTier | None:
    """The disk tier of `disk_cache_bytes` under `disk_cache_dir`, or None (no budget, or
    caching off). `identity`: the KV identity and the model's fingerprint, which its files
    carry so that another model's are never read."""
    if not c.enable_prefix_caching or c.disk_cache_bytes == 0:
        return None
    kv_identity, fingerprint = identity
    root = Path(c.disk_cache_dir) if c.disk_cache_dir else default_data_dir() / "kv-cache"
    dtype = str(kv.data.dtype).removeprefix("torch.")
    layout = Layout(dtype, c.block_size, spec.num_layers, spec.num_kv_heads, spec.head_dim)
    return DiskTier(
        kv,
        root / kv_identity[:16],
        Identity(kv_identity, fingerprint, layout),
        DiskIndex(c.extended_ttl, clock=clock),
        c.disk_cache_bytes,
        c.disk_min_free_bytes,
        c.kv_cache_bytes,
        Syncer(c.disk_fsync, c.disk_fsync_interval_s, clock),
    )


def tier_stats(tiers: list[LowerTier], reused: dict[Tier, int]) -> dict[str, int]:
    """Each tier's own figures (a kind not configured reports its empty ones), and the
    prompt tokens reused from it (`reused`: the prefix cache's counts by tier)."""
    stats: dict[str, int] = {}
    for kind in KINDS:
        tier = next((t for t in tiers if t.tier is kind.tier), None)
        if tier is None:
            stats.update(kind.EMPTY_STATS)
            continue
        stats.update(tier.stats())
        stats[f"prompt_tokens_reused_from_{tier.tier.value}"] = reused[tier.tier]
    return stats
