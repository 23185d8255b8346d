"""What every serving command assembles around its engine client: the API keys, the usage
ledger (books), the Responses store, and the uvicorn server.

`serve` (one engine in-process), `serve --workers` / `router` (RemoteEngine) and
`serve --ray` (RayEngine) differ only in their client; the rest is here, once.
"""

from __future__ import annotations

import argparse
import logging
import resource
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from promptcache.api.auth import KeyRing
from promptcache.cache.policy import CachePolicy
from promptcache.cli.settings import build_config, price_tables
from promptcache.config import EngineConfig, ServerConfig, default_data_dir

log = logging.getLogger("promptcache")

FD_RESERVE = 512  # open files the server needs besides its client connections


def data_dir_of(server: ServerConfig) -> Path:
    return Path(server.data_dir) if server.data_dir else default_data_dir()


def keyring(server: ServerConfig) -> KeyRing:
    keys_file = Path(server.api_keys_file) if server.api_keys_file else None
    keys = KeyRing.from_file(keys_file, server.admin_api_key)
    if keys.open:
        log.warning(
            "no API keys configured: accepting every request as tenant 'default' "
            "(set api_keys_file to require keys)"
        )
    return keys


def make_books(
    args: argparse.Namespace, server: ServerConfig, name: str, tokenizer: Any, policy: CachePolicy
) -> Any:
    """The usage ledger with its miss diagnosis, or None when `enable_ledger` is off."""
    from promptcache.ledger.books import Books
    from promptcache.ledger.diagnosis import PromptHistory, Rules
    from promptcache.ledger.prices import PriceTable
    from promptcache.ledger.store import LEDGER_FILE, Ledger

    prices = PriceTable.from_config(price_tables(args))  # checked even with the ledger off
    if not server.enable_ledger:
        return None
    engine = build_config(EngineConfig, args, "engine")
    row, price = prices.for_model(name, server.price_model)
    anthropic = prices.for_model(name, server.anthropic_price_model)
    path = data_dir_of(server) / LEDGER_FILE
    log.info("usage ledger in %s (prices: %s)", path, row)
    return Books(
        Ledger(path, server.ledger_synchronous),
        name,
        row,
        price,
        rules=Rules(policy, engine.block_size),
        decode=lambda ids: str(tokenizer.decode(ids)),
        history=PromptHistory(server.diagnosis_history),
        anthropic=anthropic,
    )


def serve_client(
    args: argparse.Namespace,
    server: ServerConfig,
    client: Any,
    tokenizer: Any,
    name: str,
    policy: CachePolicy,
) -> FastAPI:
    """The OpenAI API over `client` (an `EngineClient`), with keys, books and store."""
    from promptcache.api.app import build_app
    from promptcache.api.context import Rendering
    from promptcache.api.limits import Limits
    from promptcache.api.store import ResponseStore

    books = make_books(args, server, name, tokenizer, policy)
    store = ResponseStore(data_dir_of(server) / "responses.sqlite3", server.responses_synchronous)
    limits = Limits.of(server)
    return build_app(
        client,
        tokenizer,
        name,
        keyring(server),
        store,
        books=books,
        limits=limits,
        rendering=Rendering.of(server, build_config(EngineConfig, args, "engine")),
    )


def run_uvicorn(app: FastAPI, server: ServerConfig, what: str) -> int:
    """Serve `app` with uvicorn, its connections bounded by `header_timeout_s` and
    `max_connections` (api/connections.py); `prewarm_file` is sent once it is up."""
    import uvicorn

    from promptcache.api.connections import ConnectionLimits, bounded_protocol
    from promptcache.cli.prewarm import prewarm_at_start

    log.info("serving %s on http://%s:%d/v1", what, server.host, server.port)
    reserve_descriptors(server.max_connections)
    prewarm_at_start(server)  # waits, in a thread, for the server to answer
    uvicorn.run(
        app,
        host=server.host,
        port=server.port,
        log_level="info",
        http=bounded_protocol(ConnectionLimits.of(server)),
        timeout_keep_alive=server.keep_alive_timeout_s,
    )
    return 0


def reserve_descriptors(connections: int) -> None:
    """Raise the soft limit of open files to fit `connections` sockets and FD_RESERVE more
    (model, databases, disk tier, workers), up to the hard limit, as Go's runtime does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = connections + FD_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < need:
        log.warning(
            "max_connections (%d) needs %d open files, but the limit is %d (ulimit -n): "
            "connections beyond it fail to be accepted",
            connections,
            need,
            target,
        )
