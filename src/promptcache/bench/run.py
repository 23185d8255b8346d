"""One bench run end to end: find the model, build the workload, send it (`loadgen.py`),
write the results.

`run_bench` is what `promptcache bench` and `bench/compare.py` call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from tqdm import tqdm

from promptcache.bench.loadgen import Runner, RunOptions
from promptcache.bench.records import RequestRecord
from promptcache.bench.report import Summary, markdown, summarize, write_json
from promptcache.bench.workloads import Session, WorkloadSpec, build_sessions, describe
from promptcache.ledger.prices import Price
from promptcache.text.chat import chat_prompt_ids


class BenchError(Exception):
    """The run could not start (no model to ask for, no tokenizer)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    base_url: str  # ends with /v1, as the openai SDK wants
    api_key: str = "sk-none"
    timeout_s: float = 600.0

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=self.timeout_s
        )


@dataclass(slots=True)
class BenchResult:
    spec: WorkloadSpec
    options: RunOptions
    records: list[RequestRecord]
    summary: Summary

    def config(self) -> dict[str, Any]:
        return {
            "workload": dataclasses.asdict(self.spec),
            "options": dataclasses.asdict(self.options),
        }


def load_tokenizer(name: str | None) -> Any:
    """The tokenizer that sizes prompts: a folder or hub id, default the bundled model's."""
    from transformers import AutoTokenizer

    from promptcache.model.loading.loader import resolve_model_path

    try:
        return AutoTokenizer.from_pretrained(name or str(resolve_model_path(None)))
    except Exception as exc:
        raise BenchError(f"cannot load tokenizer {name or 'of the bundled model'}: {exc}") from exc


def discover_model(endpoint: Endpoint) -> str:
    """The first model the endpoint lists (`GET /v1/models`)."""

    async def first() -> str:
        async with endpoint.client() as client:
            page = await client.models.list()
            return page.data[0].id

    try:
        return asyncio.run(first())
    except (openai.APIError, IndexError) as exc:
        raise BenchError(f"cannot list models at {endpoint.base_url}: {exc}") from exc


def run_bench(
    endpoint: Endpoint,
    spec: WorkloadSpec,
    options: RunOptions,
    price: tuple[str, Price],
    tokenizer: Any,
    progress: bool = True,
) -> BenchResult:
    sessions = build_sessions(spec, tokenizer)
    planned = sum(len(s.questions) for s in sessions)
    if options.max_requests is not None:
        planned = min(planned, options.max_requests)

    def count(messages: list[dict[str, str]]) -> int:
        return len(chat_prompt_ids(tokenizer, messages))

    records, wall = asyncio.run(_run(endpoint, options, sessions, planned, progress, count))
    return BenchResult(spec, options, records, summarize(records, wall, price[1], price[0]))


async def _run(
    endpoint: Endpoint,
    options: RunOptions,
    sessions: list[Session],
    planned: int,
    progress: bool,
    count_prompt: Callable[[list[dict[str, str]]], int],
) -> tuple[list[RequestRecord], float]:
    bar = tqdm(total=planned, unit="req", disable=not progress, file=sys.stderr)
    errors = 0

    def done(rec: RequestRecord) -> None:
        nonlocal errors
        errors += not rec.ok
        bar.update(1)
        bar.set_postfix(errors=errors)

    async with endpoint.client() as client:
        runner = Runner(client, options, done, count_prompt)
        records = await runner.run(sessions)
    bar.close()
    return records, runner.wall


def write_results(result: BenchResult, out_dir: Path, name: str, title: str) -> list[Path]:
    """bench.json (config, summary, every request), bench.md and the PNG plots."""
    from promptcache.bench.plots import write_plots  # matplotlib: only when plotting

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / "bench.json", {**result.config(), "server": name}, result.summary, result.records
    )
    (out_dir / "bench.md").write_text(markdown({name: result.summary}, title))
    return [
        out_dir / "bench.json",
        out_dir / "bench.md",
        *write_plots({name: result.records}, out_dir, title),
    ]


def title_of(result: BenchResult) -> str:
    o = result.options
    loop = f"rate {o.rate}/s" if o.rate is not None else f"concurrency {o.concurrency}"
    return f"## {describe(result.spec)}, {loop}, model {o.model}"
