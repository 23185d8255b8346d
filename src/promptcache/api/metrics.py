"""Prometheus metrics of the server (`GET /metrics`), in a registry of its own per app.

Request counts, tokens, latencies and queue times come from the end-of-request hook (every
request, however it ended); engine gauges from the engine client's published snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from promptcache.engine.lifecycle import Outcome, RequestRecord

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, *LATENCY_BUCKETS)  # an idle server admits at once


class Metrics:
    """Request, token and cache counters, latency histograms and engine gauges."""

    def __init__(self, engine_stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "promptcache_requests",
            "Generation requests by how they ended (outcome: finished, aborted, failed, "
            "rejected; finish_reason: stop, length, or empty when not finished)",
            ["endpoint", "outcome", "finish_reason"],
            registry=r,
        )
        self.prompt_tokens = Counter("promptcache_prompt_tokens", "Prompt tokens", registry=r)
        self.cached_tokens = Counter(
            "promptcache_cached_tokens",
            "Prompt tokens reported as cached (usage rules applied)",
            registry=r,
        )
        self.reused_tokens = Counter(
            "promptcache_reused_tokens",
            "Prompt tokens whose KV was physically reused (cached_tokens is what usage reports)",
            registry=r,
        )
        self.written_tokens = Counter(
            "promptcache_written_tokens",
            "Prompt tokens physically added to the cache (cache_write_tokens is as reported)",
            registry=r,
        )
        self.cache_write_tokens = Counter(
            "promptcache_cache_write_tokens", "Prompt tokens newly written to the cache", registry=r
        )
        self.completion_tokens = Counter(
            "promptcache_completion_tokens", "Generated tokens", registry=r
        )
        self.hit_rate = Gauge(
            "promptcache_cache_hit_rate", "cached_tokens / prompt_tokens since start", registry=r
        )
        self.ttft = Histogram(
            "promptcache_time_to_first_token_seconds",
            "Time to first token",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "promptcache_queue_time_seconds",
            "Time admitted requests waited from arrival in the engine to admission (the "
            "scheduler's first placement); behind a router, the worker's",
            buckets=QUEUE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "promptcache_request_latency_seconds",
            "End-to-end latency of finished requests",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "promptcache_requests_in_flight", "Requests queued or running", registry=r
        )
        self.aborted = Gauge(
            "promptcache_requests_aborted",
            "Requests aborted since start because their client went away",
            registry=r,
        )
        self.blocks_in_use = Gauge("promptcache_kv_blocks_in_use", "KV blocks held", registry=r)
        self.blocks_cached = Gauge(
            "promptcache_kv_blocks_cached", "KV blocks in the prefix index", registry=r
        )
        self.blocks_expired = Gauge(
            "promptcache_kv_blocks_expired",
            "KV blocks dropped since start because their retention ran out",
            registry=r,
        )
        self.tiers = {
            key: Gauge(f"promptcache_{key}", text, registry=r)
            for key, text in (
                ("host_blocks", "KV blocks held in the host tier"),
                ("host_bytes", "Bytes held in the host tier"),
                ("host_writes_total", "Blocks copied from the KV pool to the host tier"),
                ("host_loads_total", "Blocks copied back from the host tier for a request"),
                ("host_bytes_written_total", "Bytes copied from the KV pool to the host tier"),
                ("host_bytes_loaded_total", "Bytes copied back from the host tier"),
                ("host_evicted_total", "Host-tier blocks dropped for room"),
                ("host_expired_total", "Host-tier blocks dropped because their retention ran out"),
                ("prompt_tokens_reused_from_host", "Prompt tokens reused from the host tier"),
                ("disk_blocks", "KV blocks held in the disk tier's files"),
                ("disk_bytes", "Bytes of the disk tier's files"),
                ("disk_writes_total", "Files written by the disk tier"),
                ("disk_write_failures_total", "Disk-tier writes refused (no room) or failed"),
                ("disk_writes_dropped_total", "Disk-tier writes skipped: writer queue full"),
                ("disk_reads_total", "Disk-tier files read and verified for a request"),
                ("disk_loads_total", "Blocks copied from the disk tier into the KV pool"),
                ("disk_bytes_written_total", "Bytes written by the disk tier"),
                ("disk_bytes_read_total", "Bytes read by the disk tier"),
                ("disk_evicted_total", "Disk-tier files deleted for room"),
                ("disk_expired_total", "Disk-tier files deleted because their retention ran out"),
                ("disk_corrupt_total", "Disk-tier files deleted: bad checksum, truncated"),
                ("disk_foreign_total", "Disk-tier files deleted: another model or KV layout"),
                ("prompt_tokens_reused_from_disk", "Prompt tokens reused from the disk tier"),
                ("breakpoint_hits", "Requests whose reuse held an explicit breakpoint"),
                ("breakpoint_writes", "Partial blocks cached for explicit breakpoints"),
                ("breakpoints_skipped", "Breakpoints not cached: too short, or no free block"),
                ("grammar_compiles_total", "Output grammars (schemas, tool lists) compiled"),
                ("grammar_cache_hits_total", "Requests whose grammar was already compiled"),
                ("grammar_compile_failures_total", "Schemas refused: invalid or past the budget"),
                ("grammar_compile_seconds_total", "Seconds spent compiling output grammars"),
                ("grammar_compile_timeouts_total", "Compiles past grammar_compile_timeout_s"),
            )
        }
        self.blocks_total = Gauge(
            "promptcache_kv_blocks_total", "KV blocks in the pool", registry=r
        )
        self._engine_stats = engine_stats
        self._prompt = self._cached = 0

    def on_request_end(self, record: RequestRecord) -> None:
        """Count one request, however it ended (the end-of-request hook)."""
        self.requests.labels(
            record.endpoint, record.outcome.value, record.finish_reason or ""
        ).inc()
        if record.ttft_s is not None:
            self.ttft.observe(record.ttft_s)
        if record.queue_s is not None:
            self.queue_time.observe(record.queue_s)
        if record.outcome is Outcome.FINISHED:
            self.latency.observe(record.latency_s)
        u = record.usage
        if u is None:
            return
        self.prompt_tokens.inc(u.prompt_tokens)
        self.cached_tokens.inc(u.cached_tokens)
        self.cache_write_tokens.inc(u.cache_write_tokens)
        self.reused_tokens.inc(u.reused_tokens)
        self.written_tokens.inc(u.written_tokens)
        self.completion_tokens.inc(u.completion_tokens)
        self._prompt += u.prompt_tokens
        self._cached += u.cached_tokens
        self.hit_rate.set(self._cached / self._prompt if self._prompt else 0.0)

    def render(self) -> bytes:
        stats = self._engine_stats()
        self.queue_depth.set(stats["requests_in_flight"])
        self.aborted.set(stats["requests_aborted"])
        self.blocks_in_use.set(stats.get("blocks_in_use", 0))  # a router has no pool
        self.blocks_cached.set(stats.get("blocks_cached", 0))
        self.blocks_total.set(stats.get("num_blocks", 0))
        self.blocks_expired.set(stats.get("blocks_expired_total", 0))
        for key, gauge in self.tiers.items():
            gauge.set(stats.get(key, 0))
        return generate_latest(self.registry)
