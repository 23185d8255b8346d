"""Start and stop the servers the benchmarks compare, each on a free port, by pid.

promptcache serves the bundled model; vLLM's CPU build serves the same converted folder;
llama-cpp-python serves the bundled GGUF itself (the file our folder was converted from).
The peers live in their own virtual environments (bench/peers/*.sh), never in ours.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from promptcache.model.device import cpu_has_fast_bf16

MODEL = "smollm2-135m-instruct"
PEERS_DIR = Path(__file__).parent / "peers"
# vLLM's CPU backend reserves a core for its front end by default and binds its worker to
# the rest (here: one core); give its worker both cores, as promptcache's engine has.
VLLM_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def best_cpu_dtype() -> str:
    """The dtype every server gets on this CPU: bfloat16 where the CPU computes it natively
    (AVX512-BF16 or AMX), float32 elsewhere, where bfloat16 is emulated and several times
    slower (it would hand whoever runs float32 an unfair win)."""
    return "bfloat16" if cpu_has_fast_bf16() else "float32"


@dataclass
class Running:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    name: str, cmd: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Running:
    """Run `cmd` and wait (up to 10 min) until GET /v1/models answers 200."""
    proc = subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return Running(name, port, proc)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{name} did not start in 10 min; see {log}")


def stop(server: Running) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(60)
    except subprocess.TimeoutExpired:
        server.proc.kill()


def promptcache_cmd(port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        *("-m", "promptcache.cli.main", "serve", "--port", str(port)),
        *("--dtype", best_cpu_dtype(), *extra),
    ]


def vllm_cmd(python: str, model_dir: Path, port: int) -> list[str]:
    return [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        *("--model", str(model_dir), "--served-model-name", MODEL, "--port", str(port)),
        *("--enable-prefix-caching", "--enforce-eager", "--enable-prompt-tokens-details"),
        *("--max-model-len", "8192", "--dtype", best_cpu_dtype()),
        *("--gpu-memory-utilization", "0.3"),
    ]


def llamacpp_cmd(python: str, gguf: Path, port: int) -> list[str]:
    """llama-cpp-python's server with its RAM prompt cache (states of earlier prompts, looked
    up by longest prefix), 2 threads, the full 8,192-token context. It runs one request at
    a time; by default a new request interrupts the running one (its stream just ends), so
    `--interrupt_requests false` makes concurrent requests wait their turn instead."""
    return [
        python,
        str(PEERS_DIR / "llamacpp_server.py"),
        *("--model", str(gguf), "--model_alias", MODEL, "--port", str(port)),
        *("--n_ctx", "8192", "--n_threads", "2", "--n_threads_batch", "2"),
        *("--cache", "true", "--cache_type", "ram", "--interrupt_requests", "false"),
    ]
