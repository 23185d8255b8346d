"""Tenant isolation, measured as an attacker would (after Gu et al., ICML 2025: prompt-
caching timing side channels at API providers), and checked by id.

Timing probe: tenant A caches a secret prefix; tenant B sends guesses of equal length that
share none of it, its first 1,024 tokens, or all of it. B's times to the first token must
be indistinguishable (two-sided Mann-Whitney U, p > 0.01 for every pair), while the same
probe inside tenant A separates its hits from its misses (p < 0.01), so the probe has the
power to see a hit. Each trial uses a new secret, so no guess of B's is ever a hit on B's
own cache (the two sharing guesses probe two different secrets, or the second would hit
the first in B's own cache), and the order of the probes is shuffled in every trial.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from scipy.stats import mannwhitneyu

from promptcache.api.auth import KeyRing
from promptcache.config import EngineConfig
from promptcache.model.loading.loader import LoadedModel
from tests.api.helpers import Server
from tests.api.inprocess import MODEL, TENANT_KEYS, Running, serve_in_process

pytestmark = pytest.mark.server

TRIALS = 8
SHARED = 1024  # tokens of the secret the middle guess shares
LENGTH = 1100  # tokens of every secret and guess
WORDS = [
    "harbour",
    "tide",
    "chart",
    "anchor",
    "lantern",
    "compass",
    "rope",
    "sail",
    "mast",
    "hull",
    "keel",
    "rudder",
    "gull",
    "storm",
    "fog",
    "reef",
    "buoy",
    "pier",
    "crane",
    "cargo",
    "ledger",
    "ink",
    "quill",
    "wax",
    "seal",
    "letter",
    "coin",
]


@pytest.fixture(scope="module")
def two_tenants(
    bundled: LoadedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    keys = KeyRing(TENANT_KEYS)
    tmp = tmp_path_factory.mktemp("isolation")
    yield from serve_in_process(bundled, tmp, EngineConfig(kv_cache_bytes=512 << 20), keys)


def _tokens(running: Running, rng: random.Random, n: int) -> list[int]:
    tok = running.engine.tokenizer
    text = " ".join(rng.choice(WORDS) for _ in range(n))
    return list(tok.encode(text, add_special_tokens=False))[:n]


def _text(running: Running, ids: list[int]) -> str:
    return str(running.engine.tokenizer.decode(ids))


def _ttft(running: Running, key: str, text: str) -> float:
    """Seconds to the first (and only) output token of a one-message chat."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 1}
    started = time.perf_counter()
    r = httpx.post(
        f"{running.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    assert r.status_code == 200, r.text
    return elapsed


@pytest.mark.slow
@pytest.mark.timing
def test_timing_does_not_tell_another_tenants_prefix(two_tenants: Running) -> None:
    rng = random.Random(7)
    times: dict[str, list[float]] = {k: [] for k in ("none", "1024", "all", "hit", "miss")}
    for _ in range(TRIALS):
        secret, other = _tokens(two_tenants, rng, LENGTH), _tokens(two_tenants, rng, LENGTH)
        for cached in (secret, other):  # A caches two secrets
            _ttft(two_tenants, "sk-a", _text(two_tenants, cached))

        def fresh(n: int) -> list[int]:
            return _tokens(two_tenants, rng, n)

        probes = {
            "none": ("sk-b", fresh(LENGTH)),
            "1024": ("sk-b", secret[:SHARED] + fresh(LENGTH - SHARED)),
            "all": ("sk-b", other[: LENGTH - 8] + fresh(8)),
            "hit": ("sk-a", secret[: LENGTH - 8] + fresh(8)),
            "miss": ("sk-a", fresh(LENGTH)),
        }
        order = list(probes)
        rng.shuffle(order)
        for name in order:
            key, ids = probes[name]
            times[name].append(_ttft(two_tenants, key, _text(two_tenants, ids)))
    medians = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print("median TTFT (s):", {k: round(v, 3) for k, v in medians.items()})
    for a, b in (("none", "1024"), ("none", "all"), ("1024", "all")):
        p = mannwhitneyu(times[a], times[b], alternative="two-sided").pvalue
        print(f"B {a} vs {b}: p = {p:.3f}")
        assert p > 0.01, f"B's {a} and {b} guesses are distinguishable (p={p:.4f}): {times}"
    p = mannwhitneyu(times["hit"], times["miss"], alternative="two-sided").pvalue
    print(f"A hit vs miss: p = {p:.2e}")
    assert p < 0.01, f"the probe cannot tell A's own hits from misses (p={p:.4f}): {times}"
    assert max(times["hit"]) < min(times["miss"])


def test_no_object_of_another_tenant_by_id(two_tenants: Running) -> None:
    def get(path: str, key: str) -> httpx.Response:
        return httpx.get(
            f"{two_tenants.base_url}{path}", headers={"Authorization": f"Bearer {key}"}
        )

    created = httpx.post(
        f"{two_tenants.base_url}/v1/responses",
        json={"model": MODEL, "input": "A's secret question", "max_output_tokens": 2},
        headers={"Authorization": "Bearer sk-a"},
        timeout=60,
    ).json()
    rid = created["id"]
    assert get(f"/v1/responses/{rid}", "sk-a").status_code == 200
    assert get(f"/v1/responses/{rid}", "sk-b").status_code == 404
    assert get(f"/v1/promptcache/requests/{rid}/cache", "sk-b").status_code == 404
    usage = get("/v1/promptcache/usage?by=tenant", "sk-b").json()
    assert all(row["group"] == "tenant-b" for row in usage["data"])
    assert get("/v1/promptcache/usage?tenant=tenant-a", "sk-b").status_code == 403


def test_keys_are_never_logged(server: Server, tmp_path: Path) -> None:
    client = server.client("sk-tenant-a")
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
    )
    bad = httpx.get(f"{server.base_url}/v1/models", headers={"Authorization": "Bearer sk-nope"})
    assert bad.status_code == 401
    log = server.log.read_text()
    assert "sk-tenant-a" not in log and "sk-nope" not in log
