"""The cache page in a real headless browser: Debian's `chromium` loads `/dashboard` from a
running server with traffic; the tables and charts render with the ledger's figures."""

from __future__ import annotations

import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

import httpx
import pytest

from promptcache.ledger.report import UsageQuery, usage
from tests.api.inprocess import MODEL, Running

pytestmark = pytest.mark.server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOC = "The solar system has eight planets that orbit the Sun on nearly flat orbits. " * 70


def _traffic(running: Running) -> None:
    for key, system, question in (
        ("sk-a", DOC, "Why?"),
        ("sk-a", DOC, "How many?"),
        ("sk-a", "Be brief.", "Hi"),
        ("sk-b", "Be brief.", "Hello"),
    ):
        running.client(key).chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            max_tokens=1,
            temperature=0,
        )


def _browser(args: list[str], tmp_path: Path) -> str:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    cmd += [f"--user-data-dir={tmp_path / 'profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def _cells(dom: str, table_id: str) -> list[list[str]]:
    table = re.search(rf"<table id=\"{table_id}\">(.*?)</table>", dom, re.S)
    assert table, f"no table {table_id}"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    return [[unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)] for r in rows[1:]]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_dashboard_in_a_browser(running_keys: Running, tmp_path: Path) -> None:
    _traffic(running_keys)
    url = f"{running_keys.base_url}/dashboard?key=sk-a"  # sets the cookie, then redirects
    dom = _browser(["--dump-dom", url], tmp_path)
    assert "tenant tenant-a" in dom
    [[_, *figures]] = _cells(dom, "totals")
    [mine] = usage(running_keys.ledger.path, UsageQuery(tenant="tenant-a", by="tenant"))
    assert figures[:4] == [
        str(mine.requests),
        str(mine.prompt_tokens),
        str(mine.cached_tokens),
        f"{mine.hit_rate:.1%}",
    ]
    assert [row[0] for row in _cells(dom, "tenants")] == ["tenant-a"]  # only its own
    misses = _cells(dom, "misses")
    assert [row[4] for row in misses] == ["below_minimum", "no_prefix"]  # newest first
    assert dom.count("<svg") == 2 and "<polyline" in dom and 'class="part"' in dom
    shot = tmp_path / "dashboard.png"
    _browser([f"--screenshot={shot}", "--window-size=1200,1600", url], tmp_path)
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dashboard_auth(running_keys: Running) -> None:
    _traffic(running_keys)
    url = f"{running_keys.base_url}/dashboard"
    bare = httpx.get(url, timeout=30)
    assert bare.status_code == 401 and bare.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(url, params={"key": "sk-nope"}, timeout=30).status_code == 401
    basic = httpx.get(url, auth=("any", "sk-b"), timeout=30)
    assert basic.status_code == 200 and "tenant tenant-b" in basic.text
    assert "tenant-a" not in basic.text  # nothing of the other tenant
    admin = httpx.get(url, headers={"Authorization": "Bearer sk-admin"}, timeout=30)
    assert "every tenant" in admin.text and "tenant-a" in admin.text and "tenant-b" in admin.text
