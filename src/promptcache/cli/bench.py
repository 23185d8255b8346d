"""`promptcache bench`: flags, then one run against any OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from promptcache.bench.loadgen import RunOptions
from promptcache.bench.report import markdown
from promptcache.bench.workloads import WORKLOADS, WorkloadSpec
from promptcache.ledger.prices import DEFAULT_PRICE_MODEL, OPENAI_PRICES, price_for


def add_bench_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="load-test an OpenAI-compatible endpoint and measure what prompt caching buys",
        description="Send a seeded workload of streamed chat completions and report TTFT, "
        "latency, throughput, cache hit rate (from the server's usage) and cost.",
    )
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=None, help="default: $OPENAI_API_KEY, else 'sk-none'")
    p.add_argument("--model", default=None, help="default: the first of GET /v1/models")
    p.add_argument("--workload", required=True, choices=WORKLOADS)
    p.add_argument("--small", action="store_true", help="sizes that fit a 2-core CPU")
    size = p.add_argument_group("workload sizes (defaults depend on --workload; see docs)")
    for flag, kind in _SIZE_FLAGS:
        size.add_argument(flag, type=kind, default=None)
    size.add_argument("--order", choices=("interleaved", "grouped"), default=None)
    size.add_argument("--seed", type=int, default=0, help="workload and arrivals; default: 0")
    loop = p.add_argument_group("load")
    loop.add_argument("--concurrency", type=int, default=1, help="closed loop users; default 1")
    loop.add_argument("--rate", type=float, default=None, help="open loop: sessions/s (Poisson)")
    loop.add_argument("--requests", type=int, default=None, help="stop after N requests")
    loop.add_argument("--duration", type=float, default=None, help="stop starting after S s")
    loop.add_argument("--temperature", type=float, default=0.0, help="default: 0 (greedy)")
    loop.add_argument(
        "--max-tokens-param",
        choices=("max_tokens", "max_completion_tokens"),
        default="max_tokens",
        help="request field for the output length; default: max_tokens",
    )
    loop.add_argument("--timeout", type=float, default=600.0, help="per request (s); default 600")
    loop.add_argument(
        "--retention",
        choices=("in_memory", "24h"),
        default=None,
        help="send prompt_cache_retention with every request; default: not sent",
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--price-model",
        default=None,
        choices=sorted(OPENAI_PRICES),
        help=f"price row; default: --model if it is listed, else {DEFAULT_PRICE_MODEL}",
    )
    out.add_argument("--prices", default=None, help="IN,CACHED,OUT USD per 1M tokens")
    out.add_argument("--tokenizer", default=None, help="sizes prompts; default: bundled model")
    out.add_argument("--out", type=Path, default=None, help="default: ./bench-results/<run>")
    out.add_argument("--name", default=None, help="server label in tables; default: host:port")
    out.add_argument("--no-progress", action="store_true")


_SIZE_FLAGS = (
    ("--num-prompts", int),
    ("--groups", int),
    ("--prompts-per-group", int),
    ("--users", int),
    ("--rounds", int),
    ("--system-tokens", int),
    ("--system-tokens-max", int),
    ("--question-tokens", int),
    ("--output-tokens", int),
)


def run_bench_command(args: argparse.Namespace) -> int:
    from promptcache.bench.run import (
        BenchError,
        Endpoint,
        discover_model,
        load_tokenizer,
        run_bench,
        title_of,
        write_results,
    )

    for name in ("httpx", "httpx2"):  # no log line per request
        logging.getLogger(name).setLevel(logging.WARNING)
    endpoint = Endpoint(
        args.base_url.rstrip("/"),
        args.api_key or os.environ.get("OPENAI_API_KEY") or "sk-none",
        args.timeout,
    )
    try:
        spec = WorkloadSpec.for_name(args.workload, args.small, **_sizes(args))
        model = args.model or discover_model(endpoint)
        price = price_for(model, args.price_model, args.prices)
        tokenizer = load_tokenizer(args.tokenizer)
    except (BenchError, ValueError) as exc:
        print(f"promptcache bench: error: {exc}", file=sys.stderr)
        return 2
    options = RunOptions(
        model=model,
        concurrency=args.concurrency,
        rate=args.rate,
        max_requests=args.requests,
        duration=args.duration,
        temperature=args.temperature,
        max_tokens_param=args.max_tokens_param,
        seed=args.seed,
        retention=args.retention,
    )
    result = run_bench(endpoint, spec, options, price, tokenizer, not args.no_progress)
    name = args.name or endpoint.base_url.split("//")[-1].split("/")[0]
    title = title_of(result)
    out = args.out or Path("bench-results") / f"{args.workload}-{time.strftime('%Y%m%d-%H%M%S')}"
    files = write_results(result, out, name, title)
    print(markdown({name: result.summary}, title))
    for rec in [r for r in result.records if not r.ok][:5]:
        print(f"error {rec.error} ({rec.tag}): {rec.error_detail}", file=sys.stderr)
    print(f"wrote {', '.join(str(f) for f in files)}", file=sys.stderr)
    return 0 if result.summary.ok else 1


def _sizes(args: argparse.Namespace) -> dict[str, object]:
    names = [flag[2:].replace("-", "_") for flag, _ in _SIZE_FLAGS]
    return {**{n: getattr(args, n) for n in names}, "order": args.order, "seed": args.seed}
