"""Soak: many concurrent clients against a real `promptcache serve` for a bounded time.

    python bench/soak.py [--duration 300] [--clients 64] [--warmup 60] [--json FILE]

The clients mix Chat Completions and Responses, streamed and not, a few shared long
prefixes and unique ones, long and short prompts, and some hang up mid-stream. At the end
(after the load stops and the server drains) it reports:

- requests by outcome; any error other than a clean 429 (OpenAI's error shape,
  `rate_limit_error`) is unexpected, and so is a 429 without that shape;
- the server's resident memory at the end of the warm-up, halfway through the rest, its
  peak and at the end (flat: the second half grew by at most 5 %; the first minutes fill
  the KV pool's pages, the host tier's (64 MiB here) and the allocator's high-water mark,
  which are bounded);
- the KV pool: no request in flight and no block in use once idle (nothing leaked);
- usage: every finished request's usage as its client saw it equals its ledger row, and
  `cached_tokens` follows OpenAI's rules (0, or 1,024 and up in steps of 128).

Then the crash run (`--kill-after`, default 20 s; 0 skips it): load again, `kill -9` the
server mid-flight, and check that `responses.sqlite3` and `ledger.sqlite3` pass SQLite's
integrity check, that after a restart every finished request its client saw has its
ledger row and every stored response is retrievable, and that the disk tier (fed by the
`24h` requests of the mix) found no corrupt file.

Exit status 1 when any check fails. Figures are recorded in docs/design/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from promptcache.ledger.store import LEDGER_FILE, Ledger

sys.path.insert(0, str(Path(__file__).parent))
from servers import MODEL, free_port, promptcache_cmd, start, stop

WORDS = ["tide", "harbour", "chart", "anchor", "rope", "sail", "mast", "keel", "gull", "reef"]


def _manual(k: int) -> str:
    rng = random.Random(k)
    return f"Manual {k}. " + " ".join(rng.choice(WORDS) for _ in range(900))


SHARED = [_manual(k) for k in range(4)]  # the shared long prefixes


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    usages: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)  # ids of stored responses received
    killed: bool = False  # the server was killed on purpose: errors from then on are expected


def _prompt(rng: random.Random) -> tuple[str, str]:
    """(system, user): a shared or unique prefix, long or short."""
    if rng.random() < 0.5:
        system = rng.choice(SHARED)
    elif rng.random() < 0.5:
        system = "Notes. " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(300, 900)))
    else:
        system = "Be brief."
    return system, f"Question {rng.randint(0, 10**9)}: what is a {rng.choice(WORDS)}?"


def _chat_usage(u: Any) -> tuple[int, int, int, int]:
    d = u.prompt_tokens_details
    return (u.prompt_tokens, d.cached_tokens, d.cache_write_tokens, u.completion_tokens)


def _responses_usage(u: Any) -> tuple[int, int, int, int]:
    d = u.input_tokens_details
    return (u.input_tokens, d.cached_tokens, d.cache_write_tokens, u.output_tokens)


async def _chat(client: AsyncOpenAI, rng: random.Random, tally: Tally) -> str:
    system, user = _prompt(rng)
    messages: Any = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    n = rng.randint(4, 24)
    if rng.random() < 0.5:
        out = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=n)
        tally.usages[out.id] = _chat_usage(out.usage)
        return "chat"
    hang_up = rng.random() < 0.15
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=n,
        stream=True,
        stream_options={"include_usage": True},
    )
    async with stream:
        k = 0
        async for chunk in stream:
            k += 1
            if hang_up and k == 3:
                return "chat stream, hung up"
            if chunk.usage is not None:
                tally.usages[chunk.id] = _chat_usage(chunk.usage)
    return "chat stream"


async def _responses(client: AsyncOpenAI, rng: random.Random, tally: Tally) -> str:
    system, user = _prompt(rng)
    n = rng.randint(4, 24)
    if rng.random() < 0.5:
        retention: Any = "24h" if rng.random() < 0.3 else "in_memory"
        out = await client.responses.create(
            model=MODEL,
            instructions=system,
            input=user,
            max_output_tokens=n,
            prompt_cache_retention=retention,
        )
        tally.usages[out.id] = _responses_usage(out.usage)
        tally.stored.add(out.id)
        return "responses"
    hang_up = rng.random() < 0.15
    stream = await client.responses.create(
        model=MODEL, instructions=system, input=user, max_output_tokens=n, stream=True
    )
    async with stream:
        k = 0
        async for event in stream:
            k += 1
            if hang_up and k == 6:
                return "responses stream, hung up"
            if event.type in ("response.completed", "response.incomplete"):
                resp = event.response
                tally.usages[resp.id] = _responses_usage(resp.usage)
    return "responses stream"


async def _user(i: int, client: AsyncOpenAI, deadline: float, tally: Tally) -> None:
    rng = random.Random(i)
    while time.monotonic() < deadline:
        try:
            call = _chat if rng.random() < 0.5 else _responses
            tally.outcomes[await call(client, rng, tally)] += 1
        except openai.RateLimitError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            clean = body.get("type") == "rate_limit_error" or exc.code == "server_overloaded"
            tally.outcomes["429"] += 1
            if not clean:
                tally.unexpected.append(f"429 without OpenAI's shape: {exc.body}")
            await asyncio.sleep(0.5)
        except openai.APIError as exc:
            if tally.killed:
                tally.outcomes["cut by the kill"] += 1
                return
            tally.unexpected.append(f"{type(exc).__name__}: {exc}")
            tally.outcomes["error"] += 1


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _sample_rss(pid: int, warmup_end: float, deadline: float, seen: dict[str, int]) -> None:
    middle = warmup_end + (deadline - warmup_end) / 2
    while time.monotonic() < deadline:
        rss = _rss(pid)
        if time.monotonic() >= warmup_end:
            seen.setdefault("warmup", rss)
            seen["peak"] = max(seen.get("peak", 0), rss)
        if time.monotonic() >= middle:
            seen.setdefault("middle", rss)
        await asyncio.sleep(1.0)


def _drained(base: str) -> bool:
    """Wait (up to 2 min) for no request in flight and no KV block in use."""
    deadline = time.time() + 120
    while time.time() < deadline:
        busy = httpx.get(f"{base}/health", timeout=10).json()["requests_in_flight"]
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        if busy == 0 and "promptcache_kv_blocks_in_use 0.0" in metrics:
            return True
        time.sleep(0.5)
    return False


def _usage_mismatches(tally: Tally, ledger: Path) -> list[str]:
    rows = {r.request_id: r for r in Ledger(ledger).rows()}
    bad = []
    for rid, (prompt, cached, write, out) in tally.usages.items():
        row = rows.get(rid)
        if row is None:
            bad.append(f"{rid}: no ledger row")
            continue
        booked = (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens, row.output_tokens)
        if booked != (prompt, cached, write, out):
            bad.append(f"{rid}: the client saw {(prompt, cached, write, out)}, the books {booked}")
        if cached and (cached < 1024 or cached % 128 or cached > prompt):
            bad.append(f"{rid}: cached_tokens {cached} breaks OpenAI's rules")
    return bad


async def _load(
    base: str, pid: int, args: argparse.Namespace, duration: float, kill: Any = None
) -> tuple[Tally, dict[str, int]]:
    """`duration` seconds of load; with `kill`, call it then, while requests are in flight."""
    tally, rss = Tally(), dict[str, int]()
    deadline = time.monotonic() + duration
    client = AsyncOpenAI(base_url=base + "/v1", api_key="soak", max_retries=0, timeout=600)
    sampler = asyncio.create_task(_sample_rss(pid, time.monotonic() + args.warmup, deadline, rss))
    if kill is None:
        await asyncio.gather(*(_user(i, client, deadline, tally) for i in range(args.clients)))
    else:  # the users go on until the kill cuts them off
        users = asyncio.gather(
            *(_user(i, client, deadline + 600, tally) for i in range(args.clients))
        )
        await asyncio.sleep(duration)
        tally.killed = True
        kill()
        await users
    await sampler
    await client.close()
    return tally, rss


def _crash_run(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Load, `kill -9` mid-flight, check both databases, restart, check what was kept."""
    port = free_port()
    server = start("promptcache", _serve_cmd(port, data, args), port, data / "server-crash.log")
    tally, _ = asyncio.run(
        _load(f"http://127.0.0.1:{port}", server.proc.pid, args, args.kill_after, server.proc.kill)
    )
    server.proc.wait(30)
    sound = {}
    for name in ("responses.sqlite3", LEDGER_FILE):
        db = sqlite3.connect(data / name)
        sound[name] = db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
    port = free_port()
    again = start("promptcache", _serve_cmd(port, data, args), port, data / "server-restart.log")
    try:
        base = f"http://127.0.0.1:{port}"
        missing = [
            rid
            for rid in tally.stored
            if httpx.get(f"{base}/v1/responses/{rid}", timeout=30).status_code != 200
        ]
        metrics = httpx.get(f"{base}/metrics", timeout=30).text
    finally:
        stop(again)
    booked = {r.request_id for r in Ledger(data / LEDGER_FILE).rows("outcome = 'finished'")}
    return {
        "requests_before_the_kill": sum(tally.outcomes.values()),
        "cut_by_the_kill": tally.outcomes["cut by the kill"],
        "unexpected_errors": len(tally.unexpected),
        "databases_sound": all(sound.values()),
        "finished_without_a_ledger_row": len(set(tally.usages) - booked),
        "stored_responses_checked": len(tally.stored),
        "stored_responses_missing": len(missing),
        "disk_blocks_at_restart": _metric(metrics, "promptcache_disk_blocks"),
        "disk_corrupt_at_restart": _metric(metrics, "promptcache_disk_corrupt_total"),
    }


# The host tier is a cache with a byte budget: its store's pages become resident as it
# first fills. A small budget fills during the warm-up, so that growth (bounded, and meant)
# does not hide or pass for a leak in the memory check.
SERVE_FLAGS = ("--kv-cache-bytes", "1GiB", "--host-cache-bytes", "64MiB")


def _serve_cmd(port: int, data: Path, args: argparse.Namespace) -> list[str]:
    extra = args.serve_args.split()
    return promptcache_cmd(port, "--data-dir", str(data), *SERVE_FLAGS, *extra)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=300.0, help="seconds of load (300)")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients (64)")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before memory counts")
    p.add_argument(
        "--serve-args", default="", help="extra flags for promptcache serve, e.g. '--dtype float32'"
    )
    p.add_argument("--kill-after", type=float, default=20.0, help="crash run's load (0: none)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    data = Path(tempfile.mkdtemp(prefix="promptcache-soak-"))
    port = free_port()
    cmd = _serve_cmd(port, data, args)
    server = start("promptcache", cmd, port, data / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        began = time.monotonic()
        tally, rss = asyncio.run(_load(base, server.proc.pid, args, args.duration))
        drained = _drained(base)
        rss["end"] = _rss(server.proc.pid)
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        host_bytes = _metric(metrics, "promptcache_host_bytes")
        elapsed = time.monotonic() - began
    finally:
        stop(server)
    mismatches = _usage_mismatches(tally, data / LEDGER_FILE)
    flat = rss["end"] <= rss.get("middle", rss["end"]) * 1.05
    total = sum(tally.outcomes.values())
    mib = {k: round(v / 2**20, 1) for k, v in rss.items()}
    figures = {
        "duration_s": round(elapsed, 1),
        "clients": args.clients,
        "requests": total,
        "outcomes": dict(tally.outcomes),
        "unexpected_errors": len(tally.unexpected),
        "usage_checked": len(tally.usages),
        "usage_mismatches": len(mismatches),
        "rss_mib": mib,
        "memory_flat": flat,
        "host_tier_mib_at_end": round(host_bytes / 2**20, 1),
        "pool_drained": drained,
    }
    ok = not tally.unexpected and not mismatches and flat and drained
    if args.kill_after > 0:
        crash = _crash_run(args, data)
        figures["crash"] = crash
        ok = ok and crash["databases_sound"] and crash["unexpected_errors"] == 0
        ok = ok and crash["finished_without_a_ledger_row"] == 0
        ok = ok and crash["stored_responses_missing"] == 0 and crash["disk_corrupt_at_restart"] == 0
    print(json.dumps(figures, indent=2))
    for line in (tally.unexpected + mismatches)[:20]:
        print("  ", line)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
