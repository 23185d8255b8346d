"""The router's workers: where they are, whether they are healthy, what they serve, and
what the router saw of them.

Each worker is polled on `GET /health` every `health_interval_s`; an unhealthy one leaves
the rotation and comes back when it answers 200 again. On its first healthy answer the
router reads `GET /v1/promptcache/worker` (model, KV identity, context length): a worker
whose KV identity differs from the first worker's serves another model (its block hashes
would never match) and is kept out of the rotation, with the reason in `/health`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

log = logging.getLogger(__name__)

WORKER_INFO_PATH = "/v1/promptcache/worker"
GENERATE_PATH = "/v1/promptcache/generate"
PEEK_PATH = "/v1/promptcache/peek"
VLLM = "vllm:"  # a worker URL with this prefix is a vLLM server


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    model: str
    kv_identity: str
    max_model_len: int
    vocab_size: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkerInfo:
        return cls(
            str(d["model"]), str(d["kv_identity"]), int(d["max_model_len"]), int(d["vocab_size"])
        )


@dataclass(slots=True)
class Worker:
    url: str
    kind: str = "promptcache"  # or "vllm" (given as vllm:URL)
    healthy: bool = False
    in_flight: int = 0
    info: WorkerInfo | None = None
    problem: str | None = None  # why it is out of the rotation
    requests: int = 0  # requests it finished for the router
    failures: int = 0  # attempts that failed (connection, 5xx, stream cut)
    prompt_tokens: int = 0  # of finished requests, as its usage reported
    cached_tokens: int = 0

    @property
    def name(self) -> str:
        return self.url


@dataclass(slots=True)
class WorkerPool:
    """The workers, their health checks, and the shared HTTP client."""

    urls: list[str]
    internal_key: str | None
    interval_s: float
    workers: dict[str, Worker] = field(default_factory=dict)
    http: httpx.AsyncClient | None = None

    def __post_init__(self) -> None:
        for spec in self.urls:
            kind, url = (
                ("vllm", spec[len(VLLM) :]) if spec.startswith(VLLM) else ("promptcache", spec)
            )
            url = url.rstrip("/")
            self.workers[url] = Worker(url, kind)

    @property
    def client(self) -> httpx.AsyncClient:
        if self.http is None:
            limits = httpx.Limits(max_connections=1024, max_keepalive_connections=64)
            self.http = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(10.0))
        return self.http

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.internal_key}"} if self.internal_key else {}

    def healthy(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.healthy]

    def info(self) -> WorkerInfo | None:
        """What the workers serve (the first worker that told us)."""
        return next((w.info for w in self.workers.values() if w.info is not None), None)

    async def check(self, worker: Worker) -> None:
        try:
            resp = await self.client.get(f"{worker.url}/health", timeout=5.0)
            ok = resp.status_code == 200
            if ok and worker.info is None:
                worker.info = await self._info(worker)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            ok, worker.problem = False, f"health check failed: {exc!r}"
        if ok:
            ok = self._agrees(worker)
        if ok != worker.healthy:
            log.info("worker %s is %s", worker.url, "healthy" if ok else "unhealthy")
        worker.healthy = ok
        if ok:
            worker.problem = None

    async def _info(self, worker: Worker) -> WorkerInfo:
        if worker.kind == "vllm":  # the served model; its hashes are vLLM's own
            resp = await self.client.get(f"{worker.url}/v1/models")
            resp.raise_for_status()
            card = resp.json()["data"][0]
            model = str(card["id"])
            return WorkerInfo(model, f"vllm:{model}", int(card["max_model_len"]), 2**31 - 1)
        resp = await self.client.get(f"{worker.url}{WORKER_INFO_PATH}", headers=self.headers())
        resp.raise_for_status()
        return WorkerInfo.from_json(resp.json())

    def _agrees(self, worker: Worker) -> bool:
        first = self.info()
        if worker.info is None or first is None:
            return False
        if worker.info.kv_identity != first.kv_identity:
            worker.problem = "serves another model or KV layout than the other workers"
            return False
        return True

    async def check_all(self) -> None:
        await asyncio.gather(*(self.check(w) for w in self.workers.values()))

    async def poll_forever(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval_s)

    async def wait_ready(self, timeout_s: float, need_all: bool = True) -> None:
        """Until every worker (or, without `need_all`, one) is healthy; raises
        `TimeoutError` after `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            await self.check_all()
            healthy = [w.healthy for w in self.workers.values()]
            if all(healthy) or (any(healthy) and not need_all):
                return
            if loop.time() > deadline:
                bad = [f"{w.url}: {w.problem}" for w in self.workers.values() if not w.healthy]
                raise TimeoutError("workers not ready: " + "; ".join(bad))
            await asyncio.sleep(0.5)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
