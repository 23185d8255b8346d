"""Tools benchmark: agents looping over many tools, and the grammar's cost per decode step.

1. **Agent loop.** `--agents` agents (each its own system prompt) share a list of
   `--tools` tools and run `--turns` turns together: every turn a forced call (grammar
   constrained), its result sent back. Per turn: the physical reuse as a share of the
   prompt (hit rate), and the median time to first token, with the prefix cache on and
   off, in the same run. Prompts are rendered as the server renders them (tools first,
   calls canonical, answers replayed in their generated tokens: `api.prompts`).
2. **Grammar cost.** Decode steps of `--batches` rows, every row under a tool-call grammar:
   the time spent masking logits (`engine.grammar.mask.constrain`: the matchers' bitmasks
   and their application) as a share of the step, median over the steps.

    .venv/bin/python bench/tools.py [--dtype auto] [--weights dense|q4] [--agents 4]
                                    [--turns 4] [--tools 24] [--batches 1,8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from promptcache.api.prompts import render_prompt
from promptcache.api.replays import Replays
from promptcache.api.tools import Choice, Tool, Tools, output_spec, tool_set
from promptcache.config import EngineConfig
from promptcache.engine.grammar import mask
from promptcache.engine.grammar.spec import ToolChoice
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.device import WEIGHTS, cpu_model, resolve_device, resolve_dtype
from promptcache.model.loading.loader import load_model
from promptcache.text.tools import parse_output

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.api.tools_fixtures import many_tools

GREEDY = SamplingParams(max_tokens=80, temperature=0)


def tools_of(n: int) -> Tools:
    defs = [t["function"] for t in many_tools(n)]
    return tool_set([Tool(f["name"], f["description"], f["parameters"]) for f in defs], True)


def agent_loop(engine: LLMEngine, args: argparse.Namespace, tools: Tools) -> list[dict[str, Any]]:
    """Per turn: hit rate (reused / prompt, all agents) and median TTFT (ms)."""
    tok = engine.tokenizer
    spec = output_spec(tools, Choice(ToolChoice.REQUIRED), parallel=False)
    replays = Replays(tok, 4096)
    chats: list[list[dict[str, Any]]] = [
        [
            {"role": "system", "content": f"You are agent {a} of the travel desk."},
            {"role": "user", "content": "What is the weather in Lisbon?"},
        ]
        for a in range(args.agents)
    ]
    rows = []
    for turn in range(args.turns):
        prompts = [
            render_prompt(tok, chat, tools, lambda text: replays.lookup("bench", text))
            for chat in chats
        ]
        requests = [GenerationRequest(p.token_ids, GREEDY, output=spec) for p in prompts]
        outs = engine.run(requests)
        prompt = sum(o.usage.prompt_tokens for o in outs)
        reused = sum(o.usage.reused_tokens for o in outs)
        ttft = statistics.median(1000 * (o.ttft_s or 0) for o in outs)
        rows.append({"turn": turn + 1, "hit_rate": reused / prompt, "ttft_ms": ttft})
        for chat, out in zip(chats, outs, strict=True):
            replays.record("bench", out)
            content, calls = parse_output(out.text)
            pairs = [[c.name, c.arguments] for c in calls]
            chat.append({"role": "assistant", "content": content, "calls": pairs})
            chat.append({"role": "tool", "content": json.dumps({"temperature": 20 + turn})})
    return rows


def grammar_cost(engine: LLMEngine, tools: Tools, batch: int) -> dict[str, float]:
    """Median decode step (ms) and the median share of it spent masking."""
    spent: list[float] = []
    constrain = mask.constrain

    def timed(logits: torch.Tensor, matchers: list[Any]) -> None:
        t = time.perf_counter()
        constrain(logits, matchers)
        spent.append(time.perf_counter() - t)

    spec = output_spec(tools, Choice(ToolChoice.REQUIRED), parallel=False)
    chat = [{"role": "user", "content": "What is the weather in Lisbon?"}]
    ids = render_prompt(engine.tokenizer, chat, tools).token_ids
    for _ in range(batch):
        engine.submit(GenerationRequest(list(ids), GREEDY, output=spec))
    import promptcache.engine.model_runner as runner_module

    runner_module.constrain = timed  # type: ignore[assignment]
    steps, shares = [], []
    try:
        while engine.has_unfinished():
            before = len(spent)
            running = engine.scheduler.running
            full = len(running) == batch and all(s.is_decoding for s in running)
            t = time.perf_counter()
            engine.step()
            step = time.perf_counter() - t
            if len(spent) > before and full:
                steps.append(step)
                shares.append(spent[-1] / step)
    finally:
        runner_module.constrain = constrain  # type: ignore[assignment]
    return {
        "batch": batch,
        "step_ms": 1000 * statistics.median(steps),
        "mask_ms": 1000 * statistics.median(s * t for s, t in zip(shares, steps, strict=True)),
        "mask_share": statistics.median(shares),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--weights", default="dense", choices=WEIGHTS)
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--tools", type=int, default=24)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    device = resolve_device("auto")
    dtype = resolve_dtype(args.dtype, device)
    model = load_model(None, device=device, dtype=dtype, weights=args.weights)
    print(f"# {cpu_model() if device.type == 'cpu' else device}; {dtype}; {args.weights}")
    tools = tools_of(args.tools)
    figures: dict[str, Any] = {}
    for caching in (True, False):
        config = EngineConfig(kv_cache_bytes=1 << 30, enable_prefix_caching=caching)
        rows = agent_loop(LLMEngine(model, config), args, tools)
        figures["cache_on" if caching else "cache_off"] = rows
    print(f"agent loop: {args.agents} agents, {args.tools} tools, forced calls")
    print("turn  hit rate  TTFT ms (cache on)  TTFT ms (cache off)  ratio")
    for on, off in zip(figures["cache_on"], figures["cache_off"], strict=True):
        ratio = off["ttft_ms"] / on["ttft_ms"]
        print(
            f"{on['turn']:>4}  {on['hit_rate']:8.1%}  {on['ttft_ms']:18.1f}  "
            f"{off['ttft_ms']:19.1f}  {ratio:5.2f}"
        )
    figures["grammar"] = []
    print("grammar cost per decode step (every row constrained)")
    print("batch  step ms  mask ms  share")
    for batch in (int(b) for b in args.batches.split(",")):
        engine = LLMEngine(model, EngineConfig(kv_cache_bytes=1 << 30))
        g = grammar_cost(engine, tools, batch)
        figures["grammar"].append(g)
        print(f"{batch:>5}  {g['step_ms']:7.2f}  {g['mask_ms']:7.3f}  {g['mask_share']:5.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
