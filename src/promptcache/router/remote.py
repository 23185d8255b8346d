"""`RemoteEngine`: the `EngineClient` of the router. The HTTP handlers, auth, the Responses
store and the ledger run in the router exactly as in a single server; only generation
goes to a worker, chosen by the routing policy.

A request travels as its `GenerationRequest` (token ids, sampling, cache settings) to the
worker's `POST /v1/promptcache/generate`, which streams back one `RequestOutput` per line.
Failover: a failed attempt (connection refused or cut, 5xx, 429, timeout) moves on to the
next healthy worker of the route, so a dead worker costs a retry, never a failed request.
Before the first output that is a plain retry; after outputs have reached the client, the
next worker continues the request from the output so far (`router.resume`), so the
client's stream goes on. Only when no worker is left does the stream end with an error
(in-band for streamed responses).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from promptcache.cache.policy import CachePolicy
from promptcache.config import RouterConfig
from promptcache.engine.client import Disconnected, Health, final_output
from promptcache.engine.errors import EngineDead, EngineOverloaded, RequestError
from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.outputs import PrefixReuse, RequestOutput
from promptcache.engine.request import GenerationRequest, check_request
from promptcache.engine.wire import output_from_json, request_to_json
from promptcache.router import vllm
from promptcache.router.policy import Candidate, Decision, Route, RoutingPolicy, bucket_of
from promptcache.router.resume import Progress
from promptcache.router.workers import GENERATE_PATH, PEEK_PATH, Worker, WorkerPool


class _AttemptFailed(Exception):
    """This worker could not run the request; the next one may."""


class RouterMetrics:
    """Per-worker and per-decision figures, in the server's Prometheus registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "promptcache_router_requests", "Requests finished, by worker", ["worker"], registry=r
        )
        self.failures = Counter(
            "promptcache_router_attempt_failures",
            "Attempts that failed on a worker (then failed over)",
            ["worker"],
            registry=r,
        )
        self.continuations = Counter(
            "promptcache_router_continuations",
            "Attempts continuing a request on another worker after its worker failed mid-stream",
            registry=r,
        )
        self.decisions = Counter(
            "promptcache_router_decisions", "Routing decisions, by kind", ["kind"], registry=r
        )
        self.in_flight = Gauge(
            "promptcache_router_in_flight", "Requests in flight, by worker", ["worker"], registry=r
        )
        self.healthy = Gauge(
            "promptcache_router_worker_healthy",
            "1 if the worker is in the rotation",
            ["worker"],
            registry=r,
        )
        self.hit_rate = Gauge(
            "promptcache_router_worker_hit_rate",
            "cached / prompt tokens of the worker's finished requests (its own usage)",
            ["worker"],
            registry=r,
        )
        self.buckets = Gauge(
            "promptcache_router_buckets", "Routing buckets with a live rate window", registry=r
        )
        for kind in Decision:
            self.decisions.labels(kind.value)

    def refresh(self, pool: WorkerPool, policy: RoutingPolicy) -> None:
        for w in pool.workers.values():
            self.in_flight.labels(w.name).set(w.in_flight)
            self.healthy.labels(w.name).set(1 if w.healthy else 0)
            self.hit_rate.labels(w.name).set(
                w.cached_tokens / w.prompt_tokens if w.prompt_tokens else 0
            )
        self.buckets.set(policy.buckets_tracked)


class RemoteEngine:
    """Routes each request to a worker and relays its outputs (an `EngineClient`)."""

    def __init__(
        self,
        pool: WorkerPool,
        policy: RoutingPolicy,
        config: RouterConfig,
        max_queue: int,
        usage_policy: CachePolicy,
        metrics: RouterMetrics | None = None,
    ) -> None:
        """`usage_policy` reports vLLM workers' reuse as our engine reports its own."""
        self.usage_policy = usage_policy
        self.pool = pool
        self.policy = policy
        self.config = config
        self.max_queue = max_queue
        self.metrics = metrics
        self.num_in_flight = 0
        self.num_aborted = 0
        self._poller: asyncio.Task[None] | None = None
        self._live: dict[str, RemoteStream] = {}

    def register_metrics(self, registry: CollectorRegistry) -> None:
        self.metrics = RouterMetrics(registry)

    def start(self) -> None:
        self._poller = asyncio.get_running_loop().create_task(self.pool.poll_forever())

    def shutdown(self) -> None:
        if self._poller is not None:
            self._poller.cancel()

    def submit(self, request: GenerationRequest) -> RemoteStream:
        if self.num_in_flight >= self.max_queue:
            raise EngineOverloaded(f"the server is busy: {self.num_in_flight} requests in flight")
        info, healthy = self.pool.info(), self.pool.healthy()
        if info is None or not healthy:
            raise EngineDead("no healthy worker")
        r = request
        limit = check_request(
            r.token_ids, r.params, info.max_model_len, info.vocab_size, r.prefill_only
        )
        if r.prefill_only and any(w.kind == "vllm" for w in healthy):
            raise RequestError(
                "a prewarm needs promptcache workers: vLLM has no request that computes a "
                "prompt without sampling",
                "unsupported_value",
            )
        request = replace(request, request_id=request.request_id or uuid.uuid4().hex)
        assert request.request_id is not None
        if request.request_id in self._live:
            raise RequestError(f"request id {request.request_id!r} is already running")
        route = self.policy.route(self._bucket(request), _candidates(healthy))
        if self.metrics is not None:
            self.metrics.decisions.labels(route.decision.value).inc()
        stream = RemoteStream(self, request, route, limit)
        self._live[request.request_id] = stream
        return stream

    async def peek(self, request: GenerationRequest) -> PrefixReuse | None:
        """Ask the worker the request would route to what it would reuse now (the routing
        state is left as it was). None from a vLLM worker, or one that could not answer:
        the count is still right, the reuse unknown."""
        healthy = self.pool.healthy()
        if not healthy:
            raise EngineDead("no healthy worker")
        name = self.policy.peek(self._bucket(request), _candidates(healthy))
        worker = self.pool.workers[name]
        if worker.kind == "vllm":
            return None
        try:
            resp = await self.pool.client.post(
                worker.url + PEEK_PATH,
                json=request_to_json(request),
                headers=self.pool.headers(),
                timeout=self.config.worker_timeout_s,
            )
        except httpx.TransportError:
            return None
        if resp.status_code != 200:
            return None
        body = resp.json()
        return PrefixReuse(int(body["reused_tokens"]), int(body["cached_tokens"]))

    def _bucket(self, request: GenerationRequest) -> bytes:
        """The routing bucket of `request` (its tenant, prompt prefix and cache key)."""
        c = request.cache
        return bucket_of(
            c.tenant, request.token_ids, self.config.route_prefix_tokens, c.prompt_cache_key
        )

    def abort(self, request_id: str) -> None:
        stream = self._live.get(request_id)
        if stream is not None:
            stream.cancel()

    def stats(self) -> dict[str, Any]:
        if self.metrics is not None:
            self.metrics.refresh(self.pool, self.policy)
        return {
            "requests_in_flight": self.num_in_flight,
            "requests_aborted": self.num_aborted,
            "workers": len(self.pool.workers),
            "workers_healthy": len(self.pool.healthy()),
        }

    def warm_grammar(self, output: OutputSpec) -> None:
        """Our workers compile grammars themselves; for vLLM workers the router builds the
        grammar's source here (a grammar thread), refusing a schema XGrammar cannot take."""
        if any(w.kind == "vllm" for w in self.pool.workers.values()):
            vllm.structured_outputs(output)

    def health(self) -> Health:
        healthy = self.pool.healthy()
        detail = None
        if not healthy:
            problems = [f"{w.url}: {w.problem or 'unhealthy'}" for w in self.pool.workers.values()]
            detail = "no healthy worker (" + "; ".join(problems) + ")"
        return Health(bool(healthy), self.num_in_flight, detail)

    def _forget(self, request_id: str, finished: bool) -> None:
        self._live.pop(request_id, None)
        if not finished:
            self.num_aborted += 1


def _candidates(healthy: list[Worker]) -> list[Candidate]:
    return [Candidate(w.name, w.in_flight) for w in healthy]


class RemoteStream:
    """One routed request: attempts its route's workers in order until one answers."""

    def __init__(
        self, owner: RemoteEngine, request: GenerationRequest, route: Route, max_tokens: int
    ) -> None:
        self.owner = owner
        self.request = request
        self.route = route
        self.max_tokens = max_tokens  # what the context allows, when the request set none
        self._cancelled = asyncio.Event()

    @property
    def request_id(self) -> str:
        assert self.request.request_id is not None
        return self.request.request_id

    def cancel(self) -> None:
        self._cancelled.set()

    async def final(self, disconnected: Disconnected | None = None) -> RequestOutput:
        return await final_output(self.outputs(), disconnected)

    async def outputs(self) -> AsyncGenerator[RequestOutput, None]:
        owner = self.owner
        owner.num_in_flight += 1
        finished = False
        try:
            async for out in self._failing_over(Progress(self.request)):
                finished = out.finished
                yield out
        finally:
            owner.num_in_flight -= 1
            owner._forget(self.request_id, finished)

    async def _failing_over(self, progress: Progress) -> AsyncGenerator[RequestOutput, None]:
        """Attempt the route's workers in order; after a failure mid-stream the next one
        continues from the output so far."""
        owner, request, failed = self.owner, self.request, ""
        for attempt, name in enumerate(self.route.order):
            worker = owner.pool.workers[name]
            if attempt > 0:
                if not worker.healthy or (request is not self.request and worker.kind == "vllm"):
                    continue  # a continuation needs our engine (`resumed`)
                if owner.metrics is not None:
                    owner.metrics.decisions.labels(Decision.FAILOVER.value).inc()
                    if request is not self.request:
                        owner.metrics.continuations.inc()
            try:
                async with aclosing(self._attempt(worker, request)) as outs:
                    async for out in outs:
                        out = progress.merge(out)
                        progress.record(out)
                        yield out
                return
            except _AttemptFailed as exc:
                worker.failures += 1
                if owner.metrics is not None:
                    owner.metrics.failures.labels(worker.name).inc()
                if progress.token_ids:
                    failed = f"worker {worker.url} failed mid-request: {exc}"
                    request = self._continuation(progress, failed)
        if progress.token_ids:
            raise EngineDead(f"{failed}; no healthy worker left to continue it")
        raise EngineDead("no worker could run the request")

    def _continuation(self, progress: Progress, failed: str) -> GenerationRequest:
        request = progress.continuation()
        if request is None:
            raise EngineDead(f"{failed}; the request cannot be continued")
        return request

    async def _attempt(
        self, worker: Worker, request: GenerationRequest
    ) -> AsyncGenerator[RequestOutput, None]:
        pool, timeout = self.owner.pool, self.owner.config.worker_timeout_s
        worker.in_flight += 1
        url, headers = worker.url + GENERATE_PATH, pool.headers()
        body = request_to_json(request)
        if worker.kind == "vllm":
            assert worker.info is not None
            url, headers = worker.url + vllm.COMPLETIONS_PATH, {}
            body = vllm.completion_body(self.request, worker.info.model, self.max_tokens)
        try:
            async with pool.client.stream(
                "POST", url, json=body, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0)
            ) as resp:
                if resp.status_code != 200:
                    await self._refused(worker, resp)
                async for out in self._relay(worker, resp):
                    if self._cancelled.is_set():
                        return
                    out = replace(out, worker=worker.name)
                    if out.finished:
                        self._count(worker, out)
                    yield out
                    if out.finished:
                        return
            raise _AttemptFailed("the worker's stream ended before the request finished")
        except httpx.TransportError as exc:
            worker.healthy = False  # until its next health check says otherwise
            raise _AttemptFailed(repr(exc)) from exc
        finally:
            worker.in_flight -= 1

    async def _relay(
        self, worker: Worker, resp: httpx.Response
    ) -> AsyncGenerator[RequestOutput, None]:
        if worker.kind == "vllm":
            n = len(self.request.token_ids)
            outs = vllm.outputs_of(resp.aiter_lines(), self.request_id, n, self.owner.usage_policy)
            async for out in outs:
                yield out
            return
        async for line in resp.aiter_lines():
            if line:
                yield output_from_json(json.loads(line))

    async def _refused(self, worker: Worker, resp: httpx.Response) -> None:
        text = (await resp.aread()).decode(errors="replace")
        if resp.status_code == 400:  # the request itself is wrong: no other worker helps
            try:
                err = json.loads(text)["error"]
                message, code = str(err["message"]), str(err.get("code") or "invalid_value")
                param = None if err.get("param") is None else str(err["param"])
            except (ValueError, KeyError, TypeError):
                raise RequestError(text) from None
            raise RequestError(message, code, param)
        raise _AttemptFailed(f"HTTP {resp.status_code}: {text[:200]}")

    def _count(self, worker: Worker, out: RequestOutput) -> None:
        worker.requests += 1
        worker.prompt_tokens += out.usage.prompt_tokens
        worker.cached_tokens += out.usage.cached_tokens
        if self.owner.metrics is not None:
            self.owner.metrics.requests.labels(worker.name).inc()
