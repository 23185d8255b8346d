"""`promptcache router --worker URL ...` and `promptcache serve --workers N`: the router
in front of several engine workers.

The router serves the same OpenAI API as one server: it checks API keys and tenants,
renders and tokenizes prompts, keeps the Responses store and the usage ledger, enforces
`max_queue` (429), and sends each request's tokens to the worker the routing policy picks
(`promptcache.router.policy`). `serve --workers N` starts N `promptcache serve` worker
processes on free local ports (each with its own data dir under `<data_dir>/worker-<i>`,
no ledger of its own, and a random internal key), then the router on the public port;
workers get the same engine flags and stop with the router.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptcache.cli.serving import data_dir_of, run_uvicorn, serve_client
from promptcache.cli.settings import add_config_file_flag, add_config_flags, build_config
from promptcache.config import EngineConfig, RouterConfig, ServerConfig

log = logging.getLogger("promptcache")

READY_TIMEOUT_S = 600.0  # how long the router waits for its workers at start


def add_router_parser(sub: Any, model_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("router", help="route the OpenAI API over running workers")
    p.add_argument(
        "--worker",
        action="append",
        default=[],
        required=True,
        help="a worker's base URL, e.g. http://10.0.0.2:8000, or vllm:URL for a vLLM "
        "server (repeatable; all workers of one kind and model)",
    )
    model_flags(p)
    add_config_file_flag(p)
    add_config_flags(p, ServerConfig, "server settings (ServerConfig)")
    add_config_flags(p, RouterConfig, "routing settings (RouterConfig)")
    add_config_flags(p, EngineConfig, "cache-reporting settings (EngineConfig)")


def run_router_command(args: argparse.Namespace) -> int:
    from promptcache.router.workers import VLLM

    server = build_config(ServerConfig, args, "server")
    ours = [w for w in args.worker if not w.startswith(VLLM)]
    if ours and server.internal_api_key is None:
        raise ValueError("the router needs internal_api_key: the key its workers were given")
    return serve_router(args, server, args.worker, need_all=False)


def run_with_workers(args: argparse.Namespace, argv: list[str]) -> int:
    """`serve --workers N`: N worker processes, then the router in this one."""
    server = build_config(ServerConfig, args, "server")
    data_dir = data_dir_of(server)
    key = server.internal_api_key or secrets.token_urlsafe(24)
    procs, urls = [], []
    try:
        for i in range(args.workers):
            port = _free_port()
            folder = data_dir / f"worker-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            procs.append(_start_worker(argv, port, key, folder))
            urls.append(f"http://127.0.0.1:{port}")
        log.info("started %d workers: %s", len(urls), ", ".join(urls))
        server = dataclasses.replace(server, internal_api_key=key)
        return serve_router(args, server, urls)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_with_ray(args: argparse.Namespace) -> int:
    """`serve --ray`: the engine as Ray Serve replicas, the OpenAI API in this process."""
    from transformers import AutoTokenizer

    from promptcache.engine.llm_engine import cache_policy
    from promptcache.model.loading.bundled import BUNDLED_MODEL_ID
    from promptcache.model.loading.loader import resolve_model_path

    try:
        from promptcache.router.ray_serve import RayEngine, deploy
    except ImportError as exc:
        raise ValueError(f"--ray needs Ray Serve: pip install 'promptcache[ray]' ({exc})") from exc
    server = build_config(ServerConfig, args, "server")
    engine = build_config(EngineConfig, args, "engine")
    routing = build_config(RouterConfig, args, "router")
    if engine.disk_cache_dir is None:
        kv_dir = str(data_dir_of(server) / "kv-cache")
        engine = dataclasses.replace(engine, disk_cache_dir=kv_dir)
    path = resolve_model_path(args.model)  # converted once, here, before the replicas start
    handle = deploy(
        args.model,
        args.device,
        args.dtype,
        args.weights,
        engine,
        routing,
        args.ray_replicas,
        server.max_queue,
        args.ray_address,
        {"num_cpus": args.ray_cpus_per_replica, "num_gpus": args.ray_gpus_per_replica},
    )
    info = handle.info.remote().result()
    name = server.served_model_name or (BUNDLED_MODEL_ID if args.model is None else path.name)
    client = RayEngine(handle, info, server.max_queue)
    tokenizer = AutoTokenizer.from_pretrained(path)
    app = serve_client(args, server, client, tokenizer, name, cache_policy(engine))
    what = f"{name} over {args.ray_replicas} Ray Serve replicas (policy {routing.policy})"
    return run_uvicorn(app, server, what)


def add_ray_flags(serve: argparse.ArgumentParser) -> None:
    ray = serve.add_argument_group("Ray Serve (pip install 'promptcache[ray]')")
    ray.add_argument(
        "--ray",
        action="store_true",
        help="run the engine as Ray Serve replicas routed by our policy (routing settings apply)",
    )
    ray.add_argument(
        "--ray-address",
        default=None,
        help="a running Ray cluster (e.g. ray://head:10001 or auto); default: start a local Ray",
    )
    ray.add_argument("--ray-replicas", type=int, default=2, help="engine replicas; default 2")
    ray.add_argument(
        "--ray-cpus-per-replica",
        type=float,
        default=1.0,
        help="CPUs Ray reserves per replica; default 1",
    )
    ray.add_argument(
        "--ray-gpus-per-replica",
        type=float,
        default=0.0,
        help="GPUs Ray gives each replica (1 = one replica per GPU); default 0",
    )


def serve_router(
    args: argparse.Namespace, server: ServerConfig, urls: list[str], need_all: bool = True
) -> int:
    """Wait for the workers (all, or one without `need_all`), then serve the router."""
    from transformers import AutoTokenizer

    from promptcache.engine.llm_engine import cache_policy
    from promptcache.model.loading.loader import resolve_model_path
    from promptcache.router.policy import RoutingPolicy
    from promptcache.router.remote import RemoteEngine
    from promptcache.router.workers import WorkerPool

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per health check
    routing = build_config(RouterConfig, args, "router")
    pool = WorkerPool(urls, server.internal_api_key, routing.health_interval_s)
    asyncio.run(_wait_ready(pool, need_all))
    info = pool.info()
    assert info is not None
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
    name = server.served_model_name or info.model
    policy = cache_policy(build_config(EngineConfig, args, "engine"))
    remote = RemoteEngine(pool, RoutingPolicy(routing), routing, server.max_queue, policy)
    app = serve_client(args, server, remote, tokenizer, name, policy)
    return run_uvicorn(app, server, f"{name} over {len(urls)} workers (policy {routing.policy})")


async def _wait_ready(pool: Any, need_all: bool) -> None:
    try:
        await pool.wait_ready(READY_TIMEOUT_S, need_all)
    finally:
        await pool.close()
        pool.http = None  # the server's event loop opens its own client


def _start_worker(argv: list[str], port: int, key: str, folder: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "promptcache.cli.main", *worker_args(argv, port, key, folder)]
    log_file = (folder / "worker.log").open("ab")
    return subprocess.Popen(
        cmd, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
    )


def worker_args(argv: list[str], port: int, key: str, folder: Path) -> list[str]:
    """A worker's `promptcache` arguments: the router's own, less `--workers`, then its
    address, key and data folder (later flags win). The key goes as `--flag=value`: a
    random key may begin with "-", which argparse would otherwise read as a flag. The
    router alone sends the start-up prewarms (each to the worker it routes it to)."""
    args = [*_without_workers(argv), "--host", "127.0.0.1", "--port", str(port)]
    own = [f"--internal-api-key={key}", "--no-enable-ledger", "--prewarm-file="]
    return [*args, *own, "--data-dir", str(folder)]


def _without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--workers":
            skip = True
        elif not a.startswith("--workers="):
            out.append(a)
    return out


def _die_with_parent() -> None:
    """In the worker, before exec: get SIGTERM when the router process dies (Linux)."""
    with contextlib.suppress(OSError):  # not glibc: workers are stopped by the router only
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgid(0, 0)  # Ctrl-C in a terminal reaches the router, which stops the workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
