"""Past one machine: the engine as a Ray Serve deployment, routed by our policy.

    promptcache serve --ray [--ray-address ADDR] [--ray-replicas N]

`EngineReplica` is a Ray Serve deployment: each replica holds one `LLMEngine` on its engine
thread and streams `RequestOutput`s (as JSON) for the `GenerationRequest`s it is handed.
The OpenAI API stays in the `serve` process (the same handlers, auth, Responses store and
ledger as one server): `RayEngine` is its `EngineClient`, calling the deployment through a
Ray Serve handle. The handle routes each request with `CacheAwareRequestRouter`, Ray
Serve's custom request router (`ray.serve.request_router.RequestRouter`, an alpha API;
pinned to the Ray release in the `ray` extra), which ranks replicas with our
`RoutingPolicy`: the same buckets, rendezvous order, bounded loads and overflow as the
HTTP router, over Ray's replicas and their queue lengths.

Ray is optional (`pip install promptcache[ray]`); nothing else imports this module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from promptcache.config import EngineConfig, RouterConfig
from promptcache.engine.client import Disconnected, Health, final_output
from promptcache.engine.errors import EngineOverloaded
from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.outputs import PrefixReuse, RequestOutput
from promptcache.engine.request import GenerationRequest, check_request
from promptcache.engine.wire import (
    output_from_json,
    output_to_json,
    request_from_json,
    request_to_json,
)
from promptcache.router.policy import Candidate, RoutingPolicy, bucket_of

DEPLOYMENT = "promptcache-engine"
OBJECT_STORE_BYTES = 256 * 1024**2  # a local Ray's object store: only small messages pass
APP = "promptcache"


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=256)
class EngineReplica:
    """One engine per replica; `generate` streams a request's outputs as JSON dicts."""

    def __init__(
        self,
        model: str | None,
        device: str,
        dtype: str,
        weights: str,
        engine: dict[str, Any],
        queue: int,
    ) -> None:
        from promptcache.engine.async_engine import AsyncEngine
        from promptcache.engine.host_memory import bound_onednn_caches
        from promptcache.engine.llm_engine import LLMEngine
        from promptcache.engine.openmp import run_on_temporary_thread
        from promptcache.model.device import resolve_device, resolve_dtype
        from promptcache.model.loading.loader import load_model

        config = EngineConfig(**engine)
        where = resolve_device(device)
        if where.type == "cpu":
            bound_onednn_caches(config.onednn_cache_capacity)

        def build() -> LLMEngine:
            loaded = load_model(
                model, device=where, dtype=resolve_dtype(dtype, where), weights=weights
            )
            return LLMEngine(loaded, config)

        self.engine = run_on_temporary_thread(build)
        self.client = AsyncEngine(self.engine, queue)
        self.name = serve.get_replica_context().replica_id.unique_id
        self._started = False

    def info(self) -> dict[str, Any]:
        return {
            "kv_identity": self.engine.kv_identity,
            "max_model_len": self.engine.max_model_len,
            "vocab_size": self.engine.model.spec.vocab_size,
            "replica": self.name,
        }

    async def generate(self, request: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        if not self._started:
            self.client.start()
            self._started = True
        gen = request_from_json(request)
        if gen.output.constrained:  # compiled in a thread, never on this event loop
            await asyncio.to_thread(self.client.warm_grammar, gen.output)
        stream = self.client.submit(gen)
        async with aclosing(stream.outputs()) as outputs:
            async for out in outputs:
                yield output_to_json(dataclasses.replace(out, worker=self.name))


class CacheAwareRequestRouter(RequestRouter):
    """Ray Serve's request router running our `RoutingPolicy` over the replicas."""

    def initialize_state(self, **kwargs: Any) -> None:
        self.config = RouterConfig(**kwargs)
        self.policy = RoutingPolicy(self.config)

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is None or not pending_request.args or not candidate_replicas:
            return [candidate_replicas]
        request = pending_request.args[0]
        cache = request["cache"]
        prefix = self.config.route_prefix_tokens
        bucket = bucket_of(cache["tenant"], request["token_ids"], prefix, cache["prompt_cache_key"])
        by_name = {r.replica_id.unique_id: r for r in candidate_replicas}
        queued = self.replica_queue_len_cache
        candidates = [Candidate(n, queued.get(r.replica_id) or 0) for n, r in by_name.items()]
        route = self.policy.route(bucket, candidates)
        return [[by_name[name]] for name in route.order]


def deploy(
    model: str | None,
    device: str,
    dtype: str,
    weights: str,
    engine: EngineConfig,
    routing: RouterConfig,
    replicas: int,
    max_queue: int,
    address: str | None,
    resources: dict[str, float],
) -> Any:
    """Start (or join) Ray, deploy `replicas` engine replicas with our request router, and
    return the deployment's handle."""
    import ray

    store = None if address else OBJECT_STORE_BYTES  # a cluster keeps its own settings
    ray.init(
        address=address,
        ignore_reinit_error=True,
        include_dashboard=False,
        object_store_memory=store,
    )
    serve.start(proxy_location="Disabled")  # HTTP is ours: the `serve` process's OpenAI API
    router = RequestRouterConfig(
        request_router_class=f"{__name__}.CacheAwareRequestRouter",  # type: ignore[arg-type]
        request_router_kwargs=dataclasses.asdict(routing),
    )
    replica: Any = EngineReplica  # a Ray Serve Deployment
    app = replica.options(
        num_replicas=replicas,
        request_router_config=router,
        ray_actor_options=resources,
    ).bind(model, device, dtype, weights, dataclasses.asdict(engine), max_queue)
    return serve.run(app, name=APP, route_prefix=None)


class RayEngine:
    """The `EngineClient` of the `serve --ray` process: requests go to the deployment."""

    def __init__(self, handle: Any, info: dict[str, Any], max_queue: int) -> None:
        self.handle = handle
        self.info = info
        self.max_queue = max_queue
        self.num_in_flight = 0
        self.num_aborted = 0
        self._live: dict[str, RayStream] = {}

    def start(self) -> None:
        pass  # the replicas run in Ray

    def shutdown(self) -> None:
        serve.delete(APP)

    def submit(self, request: GenerationRequest) -> RayStream:
        if self.num_in_flight >= self.max_queue:
            raise EngineOverloaded(f"the server is busy: {self.num_in_flight} requests in flight")
        info = self.info
        r = request
        check_request(
            r.token_ids, r.params, info["max_model_len"], info["vocab_size"], r.prefill_only
        )
        request = dataclasses.replace(request, request_id=request.request_id or uuid.uuid4().hex)
        stream = RayStream(self, request)
        self._live[stream.request_id] = stream
        return stream

    def abort(self, request_id: str) -> None:
        stream = self._live.get(request_id)
        if stream is not None:
            stream.cancelled.set()

    def stats(self) -> dict[str, Any]:
        return {"requests_in_flight": self.num_in_flight, "requests_aborted": self.num_aborted}

    async def peek(self, request: GenerationRequest) -> PrefixReuse | None:
        """Unknown: Ray picks the replica per request, so no one replica's cache answers."""
        return None

    def warm_grammar(self, output: OutputSpec) -> None:
        """The workers compile grammars themselves."""

    def health(self) -> Health:
        status = serve.status().applications.get(APP)
        alive = status is not None and status.status == "RUNNING"
        return Health(alive, self.num_in_flight, None if alive else f"Ray Serve app: {status}")


class RayStream:
    def __init__(self, owner: RayEngine, request: GenerationRequest) -> None:
        self.owner = owner
        self.request = request
        self.cancelled = asyncio.Event()

    @property
    def request_id(self) -> str:
        assert self.request.request_id is not None
        return self.request.request_id

    async def final(self, disconnected: Disconnected | None = None) -> RequestOutput:
        return await final_output(self.outputs(), disconnected)

    async def outputs(self) -> AsyncGenerator[RequestOutput, None]:
        owner, finished = self.owner, False
        owner.num_in_flight += 1
        gen = owner.handle.options(stream=True).generate.remote(request_to_json(self.request))
        try:
            async for item in gen:
                if self.cancelled.is_set():
                    break
                out = output_from_json(item)
                finished = out.finished
                yield out
        finally:
            if not finished:
                gen.cancel()
                owner.num_aborted += 1
            owner.num_in_flight -= 1
            owner._live.pop(self.request_id, None)
