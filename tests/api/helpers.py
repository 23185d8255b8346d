"""Helpers for the API tests (fixtures live in conftest.py): a real `promptcache serve` (or
`router`) subprocess on a free port with the test keys (bundled model, float32), and SDK
clients for it. The in-process server is in inprocess.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import OpenAI

KEYS = {"sk-tenant-a": "tenant-a", "sk-tenant-b": "tenant-b"}
MODEL = "smollm2-135m-instruct"


@dataclass
class Server:
    base_url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, key: str = "sk-tenant-a") -> OpenAI:
        return OpenAI(base_url=f"{self.base_url}/v1", api_key=key, max_retries=0, timeout=300)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=300)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` within `within` seconds (what it sends is read and
    dropped)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def start_server(
    tmp: Path, *extra: str, command: str = "serve", name: str = "server", timeout: float = 180
) -> Server:
    """`promptcache serve` (or `router`) on a free port with the test keys, data under
    `tmp/data` (`tmp/<name>-data` for a router), float32; `extra` flags win."""
    keys = tmp / "keys.json"
    keys.write_text(json.dumps(KEYS))
    port = free_port()
    log = tmp / f"{name}.log"
    data = tmp / ("data" if command == "serve" else f"{name}-data")
    cmd = [sys.executable, "-m", "promptcache.cli.main", command, "--port", str(port)]
    cmd += ["--api-keys-file", str(keys), "--data-dir", str(data)]
    if command == "serve":
        cmd += ["--dtype", "float32", "--kv-cache-bytes", "512MiB"]
    cmd += extra
    proc = subprocess.Popen(
        cmd,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.base_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()}")


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
