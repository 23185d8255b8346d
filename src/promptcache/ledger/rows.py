"""One ledger row: what the books keep of a request, built from the end-of-request record."""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass, fields

from promptcache.engine.lifecycle import RequestRecord
from promptcache.ledger.prices import Price


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A request however it ended. Token counts are as the API reported them
    (`cached_tokens`, `cache_write_tokens` follow the usage rules); `reused_tokens` and
    `written_tokens` are the physical counts. Costs are in USD."""

    time: float  # unix time the request ended
    request_id: str | None
    tenant: str | None
    api_key_id: str | None  # a digest naming the key, never the key
    endpoint: str
    model: str
    retention: str
    prompt_cache_key: str | None
    outcome: str  # finished | aborted | failed | rejected
    finish_reason: str | None
    prompt_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reused_tokens: int
    written_tokens: int
    ttft_s: float | None
    latency_s: float
    price_row: str
    cost_usd: float
    cost_without_cache_usd: float
    cache_reason: str | None
    matched_tokens: int | None
    error: str | None
    worker: str | None = None
    diagnosis: str | None = None  # JSON of `promptcache.ledger.diagnosis.Diagnosis`
    reused_host_tokens: int = 0  # of reused_tokens, those loaded from the host tier
    reused_disk_tokens: int = 0  # of reused_tokens, those loaded from the disk tier
    cache_write_long_tokens: int = 0  # of cache_write_tokens, those kept an hour or more

    @classmethod
    def of(
        cls,
        record: RequestRecord,
        model: str,
        price_row: str,
        price: Price,
        diagnosis: str | None = None,
    ) -> LedgerRow:
        req, u = record.request, record.usage
        prompt = u.prompt_tokens if u else len(req.token_ids)
        cached, write = (u.cached_tokens, u.cache_write_tokens) if u else (0, 0)
        if req.choice > 0:  # another choice of an n > 1 request: its prompt is billed once
            prompt, cached, write = 0, 0, 0
        output = u.completion_tokens if u else 0
        long = req.cache.kept_long(cached, cached + write)
        billed = u is not None  # a request refused before any output costs nothing
        return cls(
            time=time.time(),
            request_id=record.request_id,
            tenant=req.cache.tenant,
            api_key_id=req.api_key_id,
            endpoint=record.endpoint,
            model=model,
            retention=req.cache.retention.value,
            prompt_cache_key=req.cache.prompt_cache_key,
            outcome=record.outcome.value,
            finish_reason=record.finish_reason,
            prompt_tokens=prompt,
            cached_tokens=cached,
            cache_write_tokens=write,
            output_tokens=output,
            reused_tokens=u.reused_tokens if u else 0,
            written_tokens=u.written_tokens if u else 0,
            ttft_s=record.ttft_s,
            latency_s=record.latency_s,
            price_row=price_row,
            cost_usd=price.cost(prompt, cached, write, output, long) if billed else 0.0,
            cost_without_cache_usd=price.cost_without_cache(prompt, output) if billed else 0.0,
            cache_reason=record.cache.reason if record.cache else None,
            matched_tokens=record.cache.matched_tokens if record.cache else None,
            error=record.error,
            worker=record.worker,
            diagnosis=diagnosis,
            reused_host_tokens=record.cache.reused_from_host if record.cache else 0,
            reused_disk_tokens=record.cache.reused_from_disk if record.cache else 0,
            cache_write_long_tokens=long,
        )

    @staticmethod
    def columns() -> list[str]:
        return [f.name for f in fields(LedgerRow)]

    def values(self) -> tuple[object, ...]:
        return astuple(self)
