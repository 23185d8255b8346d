"""`GET /dashboard`: the cache page. Server-rendered HTML with SVG charts; no build step,
no script, nothing fetched from the internet.

Shows, for the caller's tenant (every tenant for the admin key): totals (requests, tokens,
hit rate, cost, saved), hit rate and cached tokens per hour, a table per tenant, the KV
pool's occupancy, and the most recent misses with their diagnosis.

Auth is the API's: `Authorization: Bearer KEY`, or HTTP Basic with the key as password
(browsers prompt for it), or `?key=KEY` once, which sets an HttpOnly cookie and redirects
to the bare URL so the key leaves the address bar.
"""

from __future__ import annotations

import base64
import time
from html import escape
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from promptcache.api.auth import Caller, KeyRing
from promptcache.api.errors import APIError
from promptcache.api.svg import bar_chart, line_chart
from promptcache.ledger.diagnosis import Diagnosis
from promptcache.ledger.report import UsageGroup, UsageQuery, recent_misses, total, usage

COOKIE = "promptcache_key"
HOURS = 48  # hours of history in the charts
STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
.chart{width:640px;height:220px;font-size:11px}.grid{stroke:#ddd}
rect.total{fill:#c9d7ee}rect.part{fill:#2f6fd0}.line{fill:none;stroke:#2f6fd0;stroke-width:2}
.dot{fill:#2f6fd0}.muted{color:#777}
"""


def dashboard_response(
    request: Request, keys: KeyRing, ledger: Path | None, pool: dict[str, Any], model: str
) -> Response:
    key = request.query_params.get("key")
    if key is not None:
        keys.caller(f"Bearer {key}")  # 401 for a wrong key
        resp = RedirectResponse("/dashboard", status_code=303)
        resp.set_cookie(COOKIE, key, httponly=True, samesite="strict", path="/dashboard")
        return resp
    caller = _caller(request, keys)
    return HTMLResponse(render(caller, ledger, pool, model))


def _caller(request: Request, keys: KeyRing) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    try:
        if scheme.lower() == "basic":
            user_pass = base64.b64decode(value).decode()
            return keys.caller(f"Bearer {user_pass.partition(':')[2]}")
        if header:
            return keys.caller(header)
        cookie = request.cookies.get(COOKIE)
        return keys.caller(f"Bearer {cookie}" if cookie else None)
    except APIError as exc:
        exc.headers = {"WWW-Authenticate": 'Basic realm="promptcache"'}
        raise
    except ValueError as exc:  # undecodable Basic credentials
        raise APIError(401, "Malformed Basic credentials.", "invalid_request_error") from exc


def render(caller: Caller, ledger: Path | None, pool: dict[str, Any], model: str) -> str:
    tenant = None if caller.admin else caller.tenant
    scope = "every tenant" if caller.admin else f"tenant {caller.tenant}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>promptcache: cache</title><style>{STYLE}</style></head><body>",
        f"<h1>promptcache — prompt cache</h1><p class='muted'>model {escape(model)} · "
        f"{escape(scope)} · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
    ]
    if ledger is None:
        parts.append("<p>The usage ledger is off on this server (enable_ledger).</p>")
    else:
        parts += _ledger_sections(ledger, tenant)
    parts.append(_pool_section(pool))
    parts.append("</body></html>")
    return "".join(parts)


def _ledger_sections(ledger: Path, tenant: str | None) -> list[str]:
    since = time.time() - HOURS * 3600
    hours = usage(ledger, UsageQuery(since=since, tenant=tenant, by="hour"))
    tenants = usage(ledger, UsageQuery(tenant=tenant, by="tenant"))
    labels = [h.group for h in hours]
    rates = line_chart("hit rate per hour", labels, [h.hit_rate for h in hours])
    tokens = bar_chart(
        "prompt tokens (light) and cached tokens (dark) per hour",
        labels,
        [h.prompt_tokens for h in hours],
        [h.cached_tokens for h in hours],
    )
    charts = (
        f"<p>Hit rate (cached / prompt tokens) per hour</p>{rates}"
        f"<p>Prompt tokens (light) and cached tokens (dark) per hour</p>{tokens}"
    )
    return [
        "<h2>Totals</h2>",
        _usage_table([total(tenants)], "scope", "totals"),
        f"<h2>Last {HOURS} hours (UTC)</h2><div id='charts'>{charts}</div>",
        "<h2>Tenants</h2>",
        _usage_table(tenants, "tenant", "tenants"),
        "<h2>Recent misses</h2>",
        _misses_table(ledger, tenant),
    ]


def _usage_table(groups: list[UsageGroup], name: str, table_id: str) -> str:
    head = (
        f"<table id='{table_id}'><tr><th class='l'>{name}</th><th>requests</th>"
        "<th>prompt tokens</th><th>cached tokens</th><th>hit rate</th><th>cost (USD)</th>"
        "<th>without cache (USD)</th><th>saved (USD)</th></tr>"
    )
    rows = [
        f"<tr><td class='l'>{escape(g.group)}</td><td>{g.requests}</td><td>{g.prompt_tokens}</td>"
        f"<td>{g.cached_tokens}</td><td>{g.hit_rate:.1%}</td><td>{g.cost_usd:.6f}</td>"
        f"<td>{g.cost_without_cache_usd:.6f}</td><td>{g.saved_usd:.6f}</td></tr>"
        for g in groups
    ]
    return head + "".join(rows) + "</table>"


def _misses_table(ledger: Path, tenant: str | None) -> str:
    rows = recent_misses(ledger, tenant)
    if not rows:
        return "<p class='muted'>No misses recorded.</p>"
    head = (
        "<table id='misses'><tr><th class='l'>time (UTC)</th><th class='l'>request</th>"
        "<th>prompt</th><th>cached</th><th class='l'>reason</th><th class='l'>why</th></tr>"
    )
    body = []
    for r in rows:
        found = Diagnosis.from_json(r.diagnosis) if r.diagnosis else None
        when = time.strftime("%m-%d %H:%M:%S", time.gmtime(r.time))
        body.append(
            f"<tr><td class='l'>{when}</td><td class='l'>{escape(r.request_id or '-')}</td>"
            f"<td>{r.prompt_tokens}</td><td>{r.cached_tokens}</td>"
            f"<td class='l'>{escape(found.reason if found else '-')}</td>"
            f"<td class='l'>{escape(found.summary if found else '')}</td></tr>"
        )
    return head + "".join(body) + "</table>"


def _pool_section(pool: dict[str, Any]) -> str:
    total_blocks = pool.get("num_blocks", 0) or 1
    rows = [
        ("blocks in use", pool.get("blocks_in_use", 0)),
        ("blocks cached (reusable)", pool.get("blocks_cached", 0)),
        ("blocks in the pool", pool.get("num_blocks", 0)),
        ("bytes in use", pool.get("bytes_in_use", 0)),
        ("blocks evicted since start", pool.get("blocks_evicted_total", 0)),
        ("blocks expired since start", pool.get("blocks_expired_total", 0)),
        ("host tier: blocks held", pool.get("host_blocks", 0)),
        ("host tier: slots", pool.get("host_slots", 0)),
        ("host tier: blocks loaded back", pool.get("host_loads_total", 0)),
        ("disk tier: blocks held", pool.get("disk_blocks", 0)),
        ("disk tier: bytes", pool.get("disk_bytes", 0)),
        ("disk tier: blocks loaded back", pool.get("disk_loads_total", 0)),
        ("disk tier: files dropped as corrupt", pool.get("disk_corrupt_total", 0)),
    ]
    cells = "".join(f"<tr><td class='l'>{k}</td><td>{v:,}</td></tr>" for k, v in rows)
    used = pool.get("blocks_cached", 0) / total_blocks
    return (
        "<h2>KV pool, host and disk tiers</h2>"
        f"<table id='pool'>{cells}</table>"
        f"<p class='muted'>{used:.1%} of the pool holds cached prefixes.</p>"
    )
