"""The router in front of a real vLLM server (`--worker vllm:URL`): the OpenAI SDK through
the router gets vLLM's output with usage, a repeated prefix hits vLLM's cache, and the
tenant becomes vLLM's `cache_salt`, so another tenant never hits it.

vLLM's CPU build is a 3.5 GB benchmark peer (`bash bench/peers/vllm.sh`), not a project
dependency: this test runs where it is installed ($PROMPTCACHE_VLLM_PYTHON, default the
peer's venv) and skips elsewhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.helpers import MODEL, Server, free_port, start_server, stop_server

VLLM_PYTHON = os.environ.get(
    "PROMPTCACHE_VLLM_PYTHON", str(Path.home() / ".cache/promptcache/peers/vllm/bin/python")
)
DOC = " ".join(f"Note {i}: the archive opens at nine and closes at five." for i in range(100))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.server,
    pytest.mark.skipif(
        not Path(VLLM_PYTHON).exists(), reason="vLLM's CPU build is not installed (bench peer)"
    ),
]


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    from promptcache.model.loading.loader import resolve_model_path
    from servers import VLLM_ENV, start, stop, vllm_cmd

    tmp = tmp_path_factory.mktemp("vllm")
    port = free_port()
    cmd = vllm_cmd(VLLM_PYTHON, resolve_model_path(None), port)
    cmd += ["--kv-cache-memory-bytes", str(512 << 20)]
    vllm = start("vllm-cpu", cmd, port, tmp / "vllm.log", env=VLLM_ENV)
    try:
        router = start_server(
            tmp, "--worker", f"vllm:http://127.0.0.1:{port}", command="router", name="router"
        )
        yield router
        stop_server(router)
    finally:
        stop(vllm)


def _ask(router: Server, key: str) -> tuple[str, int]:
    out = router.client(key).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": DOC}, {"role": "user", "content": "When?"}],
        max_tokens=6,
        temperature=0,
    )
    assert out.usage is not None and out.usage.prompt_tokens_details is not None
    return out.choices[0].message.content or "", out.usage.prompt_tokens_details.cached_tokens or 0


def test_vllm_worker_behind_the_router(routed: Server) -> None:
    first, cached = _ask(routed, "sk-tenant-a")
    assert first and cached == 0
    again, cached = _ask(routed, "sk-tenant-a")
    assert again == first and cached >= 1024  # vLLM's prefix cache, reported by our rules
    other, cached = _ask(routed, "sk-tenant-b")
    assert other == first and cached == 0  # another tenant: another cache_salt


def test_a_prewarm_is_refused_in_front_of_vllm(routed: Server) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "When?"}],
        "prompt_cache_prewarm": True,
    }
    with routed.http() as http:
        got = http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-tenant-a"}
        )
    assert got.status_code == 400
    assert got.json()["error"]["code"] == "unsupported_value"
    assert "vLLM" in got.json()["error"]["message"]
