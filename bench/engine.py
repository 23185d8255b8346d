"""Engine benchmark: promptcache beside plain transformers `generate`, same prompts, same run.

Prints prefill tokens/s at several prompt lengths, decode tokens/s at batch 1 and 8, and the
throughput of a batch of mixed-length requests. Medians over `--repeats` runs. The header
names the CPU, its ISA flags, the dtype and the weights. `--weights q4` adds our engine on
the GGUF's own 4-bit weights as a third system, beside dense weights and transformers.

    .venv/bin/python bench/engine.py [--dtype auto|float32|bfloat16] [--weights dense|q4]
                                     [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.device import WEIGHTS, cpu_model, resolve_device, resolve_dtype
from promptcache.model.loader import load_model


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_prompts(n: int, lengths: list[int], vocab: int, seed: int) -> list[list[int]]:
    """Seeded random prompts of ordinary tokens (ids above the special tokens)."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(100, vocab, (lengths[i % len(lengths)],), generator=g).tolist()
        for i in range(n)
    ]


class Ours:
    def __init__(self, model: Any) -> None:
        self.name = "promptcache q4" if model.weights == "q4" else "promptcache"
        # The prefix cache is off: repeats of one prompt must cost what the first did, so
        # this measures the engine itself (bench/prefix.py measures the cache).
        self.engine = LLMEngine(model, EngineConfig(enable_prefix_caching=False))

    def run(self, prompts: list[list[int]], new_tokens: int) -> float:
        """Generate exactly `new_tokens` per prompt; returns the median TTFT (s)."""
        params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
        outs = self.engine.generate(prompts, params)
        assert all(len(o.token_ids) == new_tokens for o in outs)
        return statistics.median(o.ttft_s or 0.0 for o in outs)


class Transformers:
    name = "transformers"

    def __init__(self, model: Any) -> None:
        from transformers import AutoModelForCausalLM

        self.hf = AutoModelForCausalLM.from_pretrained(model.path, dtype=model.dtype)
        self.hf.to(model.device).eval()
        self.pad = model.tokenizer.pad_token_id or 0
        self.device = model.device

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], new_tokens: int) -> float:
        """Left-padded static batch through `generate`; returns 0 (no per-request TTFT)."""
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = self.hf.generate(
            ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=self.pad,
        )
        assert out.shape[1] == width + new_tokens
        return 0.0


def bench_prefill(systems: list[Any], lengths: list[int], vocab: int, repeats: int) -> list[dict]:
    rows = []
    for n in lengths:
        [prompt] = make_prompts(1, [n], vocab, seed=n)
        for s in systems:
            s.run([prompt], 1)  # warm-up
            t = median_time(lambda s=s, p=prompt: s.run([p], 1), repeats)
            rows.append(
                {
                    "bench": "prefill",
                    "system": s.name,
                    "tokens": n,
                    "seconds": t,
                    "tokens_per_s": n / t,
                }
            )
    return rows


def bench_decode(
    systems: list[Any], batches: list[int], vocab: int, repeats: int, new_tokens: int
) -> list[dict]:
    rows = []
    for b in batches:
        prompts = make_prompts(b, [128], vocab, seed=b)
        for s in systems:
            t_first = median_time(lambda s=s, p=prompts: s.run(p, 1), repeats)
            t_all = median_time(lambda s=s, p=prompts: s.run(p, new_tokens), repeats)
            rate = b * (new_tokens - 1) / (t_all - t_first)
            rows.append({"bench": "decode", "system": s.name, "batch": b, "tokens_per_s": rate})
    return rows


def bench_batch(
    systems: list[Any], vocab: int, repeats: int, n: int, new_tokens: int
) -> list[dict]:
    lengths = [128, 256, 384, 512, 640, 768, 896, 1024]
    prompts = make_prompts(n, lengths, vocab, seed=99)
    rows = []
    for s in systems:
        t = median_time(lambda s=s: s.run(prompts, new_tokens), repeats)
        rows.append(
            {
                "bench": "batch",
                "system": s.name,
                "requests": n,
                "prompt_tokens": sum(map(len, prompts)),
                "output_tokens": n * new_tokens,
                "seconds": t,
                "output_tokens_per_s": n * new_tokens / t,
                "requests_per_s": n / t,
            }
        )
    return rows


def print_table(rows: list[dict], names: list[str]) -> None:
    """One row per bench and size: each system's tokens/s, then each of ours against
    transformers (and 4-bit against dense when both ran)."""
    keyed: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["bench"], r.get("tokens") or r.get("batch") or r.get("requests"))
        value = r.get("tokens_per_s") or r["output_tokens_per_s"]
        keyed.setdefault(key, {})[r["system"]] = value
    ours = [n for n in names if n != "transformers"]
    ratios = [f"{n} / transformers" for n in ours]
    if len(ours) == 2:
        ratios.append("q4 / dense")
    head = ["bench", "size", *(f"{n} tok/s" for n in names), *ratios]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for (bench, size), v in keyed.items():
        label = {
            "prefill": f"{size} prompt tokens",
            "decode": f"batch {size}",
            "batch": f"{size} requests",
        }[bench]
        cells = [f"{v.get(n, 0.0):.1f}" for n in names]
        cells += [f"{v.get(n, 0.0) / v['transformers']:.2f}x" for n in ours]
        if len(ours) == 2:
            cells.append(f"{v.get(ours[1], 0.0) / v[ours[0]]:.2f}x")
        print(f"| {bench} | {label} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--weights", default="dense", choices=WEIGHTS, help="q4: also 4-bit")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lengths", default="1024,2048,4096")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--batch-requests", type=int, default=16)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    device = resolve_device(args.device)
    model = load_model(args.model, device=device, dtype=resolve_dtype(args.dtype, device))
    systems: list[Any] = [Ours(model)]
    weights = "dense"
    if args.weights == "q4":
        q4 = load_model(args.model, device=device, dtype=model.dtype, weights="q4")
        weights = "dense and 4-bit" if q4.weights == "q4" else "dense (4-bit unavailable)"
        if q4.weights == "q4":
            systems.append(Ours(q4))
    systems.append(Transformers(model))
    print(
        f"# {model.path.name} on {device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), dtype {str(model.dtype).removeprefix('torch.')}, "
        f"weights {weights}\n# CPU: {cpu_model()}"
    )
    vocab = model.spec.vocab_size
    lengths = [int(x) for x in args.lengths.split(",")]
    rows = bench_prefill(systems, lengths, vocab, args.repeats)
    rows += bench_decode(systems, [1, 8], vocab, args.repeats, args.decode_tokens)
    rows += bench_batch(systems, vocab, args.repeats, args.batch_requests, args.decode_tokens)
    print_table(rows, [s.name for s in systems])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
