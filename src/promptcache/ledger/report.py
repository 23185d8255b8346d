"""Usage reports from the ledger: requests, tokens, hit rate and cost, grouped by day,
tenant, model or API key, for `promptcache usage` and `GET /v1/promptcache/usage`.

Tokens and costs sum the requests that produced output (rejected ones cost nothing and
have no usage); the request count includes every row. Hours and days are UTC.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from promptcache.ledger.rows import LedgerRow
from promptcache.ledger.store import read_rows

GroupBy = Literal["hour", "day", "tenant", "model", "key"]
GROUPS: dict[str, str] = {
    "hour": "strftime('%Y-%m-%d %H:00', time, 'unixepoch')",
    "day": "strftime('%Y-%m-%d', time, 'unixepoch')",
    "tenant": "COALESCE(tenant, '-')",
    "model": "model",
    "key": "COALESCE(api_key_id, '-')",
}


def parse_time(text: str) -> float:
    """Unix seconds from '2026-11-27', '2026-11-27T10:00[:00][+01:00]' (UTC unless an
    offset is given) or a number of unix seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not a time: {text!r} (e.g. 2026-11-27 or 2026-11-27T10:00)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@dataclass(frozen=True, slots=True)
class UsageQuery:
    since: float | None = None  # unix time, inclusive
    until: float | None = None  # unix time, exclusive
    tenant: str | None = None
    model: str | None = None
    by: GroupBy = "day"


@dataclass(frozen=True, slots=True)
class UsageGroup:
    group: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    cost_usd: float
    cost_without_cache_usd: float

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def saved_usd(self) -> float:
        return self.cost_without_cache_usd - self.cost_usd

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": self.hit_rate, "saved_usd": self.saved_usd}


def usage(path: Path, q: UsageQuery) -> list[UsageGroup]:
    """Grouped figures of the ledger at `path` (none when the file does not exist yet)."""
    if not path.exists():
        return []
    where, args = _where(q)
    billed = "outcome != 'rejected'"
    sql = (
        f"SELECT {GROUPS[q.by]} AS g, COUNT(*),"
        f" SUM(CASE WHEN {billed} THEN prompt_tokens ELSE 0 END),"
        " SUM(cached_tokens), SUM(output_tokens), SUM(cost_usd), SUM(cost_without_cache_usd)"
        f" FROM requests {where} GROUP BY g ORDER BY g"
    )
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        found = db.execute(sql, args).fetchall()
    finally:
        db.close()
    return [UsageGroup(str(g), n, p, c, o, cost, full) for g, n, p, c, o, cost, full in found]


def _where(q: UsageQuery) -> tuple[str, list[object]]:
    parts: list[str] = []
    args: list[object] = []
    for cond, value in (
        ("time >= ?", q.since),
        ("time < ?", q.until),
        ("tenant = ?", q.tenant),
        ("model = ?", q.model),
    ):
        if value is not None:
            parts.append(cond)
            args.append(value)
    return ("WHERE " + " AND ".join(parts)) if parts else "", args


def total(groups: list[UsageGroup]) -> UsageGroup:
    return UsageGroup(
        "total",
        sum(g.requests for g in groups),
        sum(g.prompt_tokens for g in groups),
        sum(g.cached_tokens for g in groups),
        sum(g.output_tokens for g in groups),
        sum(g.cost_usd for g in groups),
        sum(g.cost_without_cache_usd for g in groups),
    )


def table(groups: list[UsageGroup], by: str) -> str:
    """A Markdown table with a total row."""
    head = (
        f"| {by} | requests | prompt tokens | cached tokens | hit rate | output tokens "
        "| cost (USD) | without cache (USD) | saved (USD) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {g.group} | {g.requests} | {g.prompt_tokens} | {g.cached_tokens} "
        f"| {g.hit_rate:.1%} | {g.output_tokens} | {g.cost_usd:.6f} "
        f"| {g.cost_without_cache_usd:.6f} | {g.saved_usd:.6f} |"
        for g in [*groups, total(groups)]
    ]
    return head + "\n".join(lines) + "\n"


def recent_misses(path: Path, tenant: str | None, limit: int = 20) -> list[LedgerRow]:
    """The newest rows (of `tenant`, or all when None) whose diagnosis is not a hit."""
    hits = "('hit', 'rounded', 'waited')"
    where = f"diagnosis IS NOT NULL AND json_extract(diagnosis, '$.reason') NOT IN {hits}"
    args: list[object] = []
    if tenant is not None:
        where += " AND tenant = ?"
        args.append(tenant)
    return read_rows(path, where, args, newest=limit)
