"""`GET /v1/promptcache/usage`: the ledger's report over HTTP (an extension of OpenAI's API).

Query parameters as `promptcache usage`: `since`, `until` (ISO date/time in UTC, or unix
seconds), `model`, `by` (day | tenant | model | key), and `tenant` for the admin key.
A tenant sees only its own requests; only the admin key sees every tenant's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptcache.api.auth import Caller
from promptcache.api.errors import APIError, invalid
from promptcache.ledger.report import GROUPS, UsageQuery, parse_time, total, usage


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


def _time(text: str | None, param: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise invalid(str(exc), param) from exc
