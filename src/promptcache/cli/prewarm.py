"""`promptcache prewarm FILE`: send request bodies to a running server as prewarms, and
the server's own start-up prewarm (`prewarm_file`).

FILE holds Responses bodies (they have `input`) and Chat Completions bodies (they have
`messages`), as a JSON list or as JSON lines. Each is sent as it is, made a prewarm
(`prompt_cache_options.prewarm: true` on Responses, the `prompt_cache_prewarm: true`
extension on Chat) and not streamed; a body without `model` gets the server's first
model. One line is printed per request: the tokens it wrote to the cache. This talks HTTP
only: it never loads a model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from promptcache.config import ServerConfig

log = logging.getLogger("promptcache")

RESPONSES, CHAT = "/v1/responses", "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class Prewarmed:
    """What one prewarm reported: its prompt tokens, those it wrote, those it found."""

    endpoint: str
    input_tokens: int
    cache_write_tokens: int
    cached_tokens: int

    def line(self, index: int) -> str:
        return (
            f"{index}\t{self.endpoint}\tinput {self.input_tokens}\t"
            f"written {self.cache_write_tokens}\tcached {self.cached_tokens}"
        )


def load_bodies(path: Path) -> list[dict[str, Any]]:
    """The request bodies of a prewarm file: a JSON list of objects, or JSON lines."""
    text = path.read_text()
    try:
        data = json.loads(text)
        bodies = data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            bodies = [json.loads(line) for line in lines]
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: neither a JSON list nor JSON lines: {exc}") from exc
    for i, body in enumerate(bodies):
        endpoint_of(body, f"{path}: request {i + 1}")
    return bodies


def endpoint_of(body: Any, where: str) -> str:
    """The endpoint a body is for: Responses (`input`) or Chat Completions (`messages`)."""
    if isinstance(body, dict) and "input" in body:
        return RESPONSES
    if isinstance(body, dict) and "messages" in body:
        return CHAT
    raise ValueError(f"{where}: not a Responses body (input) nor a Chat body (messages)")


def as_prewarm(body: dict[str, Any], model: Callable[[], str]) -> dict[str, Any]:
    """`body` made a prewarm for its endpoint, not streamed, with a model."""
    out = {**body, "stream": False}
    out.setdefault("model", None)
    if out["model"] is None:
        out["model"] = model()
    if endpoint_of(body, "request") == RESPONSES:
        out["prompt_cache_options"] = {**(body.get("prompt_cache_options") or {}), "prewarm": True}
    else:
        out["prompt_cache_prewarm"] = True
    return out


def _report(endpoint: str, answer: dict[str, Any]) -> Prewarmed:
    usage = answer["usage"]
    if endpoint == RESPONSES:
        details, tokens = usage["input_tokens_details"], usage["input_tokens"]
    else:
        details, tokens = usage["prompt_tokens_details"], usage["prompt_tokens"]
    name = "responses" if endpoint == RESPONSES else "chat.completions"
    return Prewarmed(name, tokens, details["cache_write_tokens"], details["cached_tokens"])


class PrewarmClient:
    """Sends prewarms to one server with one API key (whose tenant the cache is for)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 600.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self._model: str | None = None

    def close(self) -> None:
        self.http.close()

    def model(self) -> str:
        if self._model is None:
            got = self.http.get("/v1/models")
            got.raise_for_status()
            self._model = str(got.json()["data"][0]["id"])
        return self._model

    def send(self, body: dict[str, Any]) -> Prewarmed:
        """Run one body as a prewarm; raises `ValueError` with the server's error."""
        endpoint = endpoint_of(body, "request")
        got = self.http.post(endpoint, json=as_prewarm(body, self.model))
        if got.status_code != 200:
            raise ValueError(f"{endpoint}: HTTP {got.status_code}: {got.text[:500]}")
        return _report(endpoint, got.json())

    def run(self, bodies: list[dict[str, Any]], emit: Callable[[str], None]) -> list[Prewarmed]:
        done = []
        for i, body in enumerate(bodies, start=1):
            done.append(self.send(body))
            emit(done[-1].line(i))
        return done


def add_prewarm_parser(sub: Any) -> None:
    p = sub.add_parser("prewarm", help="fill a running server's prompt cache from a file")
    p.add_argument("file", metavar="FILE", help="Responses or Chat bodies: JSON list or lines")
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="the server's root URL")
    p.add_argument("--api-key", default=None, help="the key whose tenant's cache to fill")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request")


def run_prewarm_command(args: argparse.Namespace) -> int:
    bodies = load_bodies(Path(args.file))
    client = PrewarmClient(args.base_url, args.api_key, args.timeout)
    try:
        done = client.run(bodies, print)
    except httpx.HTTPError as exc:
        raise ValueError(f"cannot reach {args.base_url}: {exc}") from exc
    finally:
        client.close()
    total = sum(p.cache_write_tokens for p in done)
    print(f"{len(done)} prewarmed, {total} tokens written", file=sys.stderr)
    return 0


def prewarm_at_start(server: ServerConfig) -> threading.Thread | None:
    """Run `server.prewarm_file` against this server once it answers `/health`, in a
    thread (None when there is no file, or it is ""). The file is read now: a bad one
    stops the start."""
    if not server.prewarm_file:
        return None
    bodies = load_bodies(Path(server.prewarm_file))
    host = "127.0.0.1" if server.host in ("0.0.0.0", "", "::") else server.host
    url = f"http://{host}:{server.port}"
    thread = threading.Thread(
        target=_prewarm_when_up, args=(url, server.prewarm_api_key, bodies), daemon=True
    )
    thread.start()
    return thread


def _prewarm_when_up(url: str, key: str | None, bodies: list[dict[str, Any]]) -> None:
    client = PrewarmClient(url, key)
    try:
        _wait_healthy(client.http)
        done = client.run(bodies, lambda line: log.info("prewarm %s", line))
        log.info("prewarmed %d requests at start", len(done))
    except (httpx.HTTPError, ValueError, TimeoutError) as exc:
        log.error("prewarm at start failed: %s", exc)
    finally:
        client.close()


def _wait_healthy(http: httpx.Client, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http.get("/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.2)
    raise TimeoutError(f"the server did not become healthy in {timeout:.0f} s")
