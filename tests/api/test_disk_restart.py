"""A `24h` prefix survives `kill -9` of the real server: after a restart the same prompt is
served from the disk tier, with `cached_tokens` > 0 and the same greedy output."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import MODEL, Server, start_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

DOCUMENT = " ".join(
    f"Clause {i}: the tenant keeps the garden tidy and the gate shut." for i in range(120)
)


def _ask(server: Server) -> tuple[str, int, str]:
    out = server.client().chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": DOCUMENT},
            {"role": "user", "content": "Who keeps the garden tidy?"},
        ],
        max_tokens=8,
        temperature=0,
        extra_body={"prompt_cache_retention": "24h"},
    )
    assert out.usage is not None and out.usage.prompt_tokens_details is not None
    cached = out.usage.prompt_tokens_details.cached_tokens or 0
    return out.choices[0].message.content or "", cached, out.id


def _metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    m = re.search(rf"^promptcache_{name} (\S+)$", text, re.MULTILINE)
    assert m is not None, name
    return float(m.group(1))


def test_24h_prefix_survives_kill_9(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        first, cached, _ = _ask(server)
        assert cached == 0
        deadline = time.time() + 60  # the writer runs in the background: wait for its files
        while _metric(server, "disk_blocks") < 64 and time.time() < deadline:
            time.sleep(0.2)
        assert _metric(server, "disk_blocks") >= 64
    finally:
        server.proc.kill()  # SIGKILL: no shutdown hook runs
        server.proc.wait(30)
    restarted = start_server(tmp_path)
    try:
        assert _metric(restarted, "disk_blocks") >= 64  # the index rebuilt from the files
        again, cached, request_id = _ask(restarted)
        assert cached >= 1024 and again == first
        assert _metric(restarted, "prompt_tokens_reused_from_disk") >= 1024
        url = f"{restarted.base_url}/v1/promptcache/requests/{request_id}/cache"
        auth = {"Authorization": "Bearer sk-tenant-a"}
        tiers = httpx.get(url, headers=auth, timeout=10).json()["usage"]["reused_tokens_by_tier"]
        assert tiers["device"] == tiers["host"] == 0 and tiers["disk"] >= 1024
    finally:
        restarted.proc.kill()
        restarted.proc.wait(30)
