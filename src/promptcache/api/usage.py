"""The ledger over HTTP (extensions of OpenAI's API).

`GET /v1/promptcache/usage`: query parameters as `promptcache usage`: `since`, `until`
(ISO date/time in UTC, or unix seconds), `model`, `by` (day | tenant | model | key), and
`tenant` for the admin key. `GET /v1/promptcache/requests/{id}/cache`: one request's usage
and miss diagnosis. A tenant sees only its own requests; only the admin key sees every
tenant's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptcache.api.auth import Caller
from promptcache.api.errors import APIError, invalid
from promptcache.ledger.diagnosis import Diagnosis
from promptcache.ledger.report import GROUPS, UsageQuery, parse_time, total, usage
from promptcache.ledger.store import read_rows


def usage_report(
    path: Path | None,
    caller: Caller,
    since: str | None,
    until: str | None,
    model: str | None,
    by: str,
    tenant: str | None,
) -> dict[str, Any]:
    if path is None:
        raise APIError(404, "the usage ledger is off on this server", "invalid_request_error")
    if by not in GROUPS:
        raise invalid(f"'by' must be one of {', '.join(GROUPS)}", "by")
    if tenant is not None and not caller.admin and tenant != caller.tenant:
        raise APIError(
            403, "only the admin key may read another tenant's usage", "permission_error", "tenant"
        )
    query = UsageQuery(
        since=_time(since, "since"),
        until=_time(until, "until"),
        tenant=tenant if caller.admin else caller.tenant,
        model=model,
        by=by,  # type: ignore[arg-type]
    )
    groups = usage(path, query)
    return {
        "object": "promptcache.usage",
        "by": by,
        "tenant": query.tenant,
        "data": [g.to_dict() for g in groups],
        "total": total(groups).to_dict(),
    }


def request_cache(path: Path | None, caller: Caller, request_id: str) -> dict[str, Any]:
    """One request's cache usage and diagnosis (404 for another tenant's, as for none)."""
    where, args = "request_id = ?", [request_id]
    if not caller.admin:
        where, args = where + " AND tenant = ?", [request_id, caller.tenant]
    mine = read_rows(path, where, args) if path is not None else []
    if not mine:
        raise APIError(
            404,
            f"No request with id '{request_id}' in the usage ledger.",
            "invalid_request_error",
            "request_id",
            "not_found",
        )
    row = mine[-1]
    found = Diagnosis.from_json(row.diagnosis).to_dict() if row.diagnosis else None
    return {
        "object": "promptcache.request_cache",
        "request_id": row.request_id,
        "outcome": row.outcome,
        "retention": row.retention,
        "prompt_cache_key": row.prompt_cache_key,
        "usage": {
            "prompt_tokens": row.prompt_tokens,
            "cached_tokens": row.cached_tokens,
            "cache_write_tokens": row.cache_write_tokens,
            "reused_tokens": row.reused_tokens,
            "reused_tokens_by_tier": {
                "device": row.reused_tokens - row.reused_host_tokens - row.reused_disk_tokens,
                "host": row.reused_host_tokens,
                "disk": row.reused_disk_tokens,
            },
            "output_tokens": row.output_tokens,
        },
        "diagnosis": found,
    }


def _time(text: str | None, param: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise invalid(str(exc), param) from exc
