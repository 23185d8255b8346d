"""Figures of a bench run: latency percentiles, throughput, cache hit rate, cost, errors.

Hit rate = sum(cached_tokens) / sum(prompt_tokens) over successful requests, both from the
server's own usage. Cost is computed from the price table twice: as billed with the cache
(cached input at its discounted price) and as it would be without any cache.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from promptcache.bench.records import RequestRecord
from promptcache.ledger.prices import Price

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class Summary:
    """The figures of one run."""

    requests: int
    ok: int
    errors: dict[str, int]
    wall_s: float
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    usage_missing: int  # successful requests whose server sent no usage
    hit_rate: float
    ttft_s: dict[str, float | None]  # p50/p90/p99
    itl_s: dict[str, float | None]
    latency_s: dict[str, float | None]
    requests_per_s: float
    output_tokens_per_s: float
    price_model: str
    cost_usd: float  # with the cache's discount
    cost_no_cache_usd: float


def summarize(
    records: list[RequestRecord], wall_s: float, price: Price, price_model: str
) -> Summary:
    ok = [r for r in records if r.ok]
    prompt = sum(r.prompt_tokens for r in ok)
    cached = sum(r.cached_tokens for r in ok)
    out = sum(r.completion_tokens for r in ok)
    return Summary(
        requests=len(records),
        ok=len(ok),
        errors=dict(Counter(r.error for r in records if r.error)),
        wall_s=wall_s,
        prompt_tokens=prompt,
        cached_tokens=cached,
        completion_tokens=out,
        usage_missing=sum(not r.usage_reported for r in ok),
        hit_rate=cached / prompt if prompt else 0.0,
        ttft_s=percentiles([t for r in ok if (t := r.ttft) is not None]),
        itl_s=percentiles([g for r in ok for g in r.inter_token]),
        latency_s=percentiles([r.latency for r in ok]),
        requests_per_s=len(ok) / wall_s if wall_s else 0.0,
        output_tokens_per_s=out / wall_s if wall_s else 0.0,
        price_model=price_model,
        cost_usd=price.cost(prompt, cached, 0, out),
        cost_no_cache_usd=price.cost_without_cache(prompt, out),
    )


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in PERCENTILES}
    got = np.percentile(np.asarray(values), PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, got, strict=True)}


TABLE_HEAD = (
    "| server | requests ok/sent | errors | prompt tokens | cached tokens | hit rate "
    "| TTFT p50 / p90 / p99 (s) | ITL p50 (ms) | latency p50 (s) | req/s | output tok/s "
    "| cost with cache / without (USD) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table_row(name: str, s: Summary) -> str:
    errors = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items())) or "-"
    ttft = " / ".join(_num(s.ttft_s[f"p{p}"], 3) for p in PERCENTILES)
    itl = s.itl_s["p50"]
    usage_note = f" ({s.usage_missing} without usage)" if s.usage_missing else ""
    # without usage the server reports no cached tokens: the hit rate is unknown, not 0
    unknown = s.usage_missing and s.usage_missing == s.ok
    cached = "n/a" if unknown else str(s.cached_tokens)
    hit_rate = "n/a" if unknown else f"{100 * s.hit_rate:.1f} %"
    return (
        f"| {name} | {s.ok}/{s.requests}{usage_note} | {errors} | {s.prompt_tokens} "
        f"| {cached} | {hit_rate} | {ttft} "
        f"| {_num(None if itl is None else 1000 * itl, 1)} | {_num(s.latency_s['p50'], 2)} "
        f"| {s.requests_per_s:.2f} | {s.output_tokens_per_s:.1f} "
        f"| {'n/a' if unknown else f'{s.cost_usd:.6f}'} / {s.cost_no_cache_usd:.6f} |"
    )


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(runs: dict[str, Summary], title: str) -> str:
    rows = "\n".join(table_row(name, s) for name, s in runs.items())
    return f"{title}\n\n{TABLE_HEAD}\n{rows}\n"


def write_json(
    path: Path, config: dict[str, Any], summary: Summary, records: list[RequestRecord]
) -> None:
    doc = {
        "config": config,
        "summary": asdict(summary),
        "records": [r.to_json() for r in records],
    }
    path.write_text(json.dumps(doc, indent=1))
