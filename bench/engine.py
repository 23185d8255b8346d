"""Engine benchmark: promptcache beside plain transformers `generate`, same prompts, same run.

Prints prefill tokens/s at several prompt lengths, decode tokens/s at batch 1 and 8, the
throughput of a batch of mixed-length requests, decode at batch 1 after a long prompt
(`--long-context`, 4,064 tokens) and the hit path: a 32-token tail over that many cached
tokens, up to its first token (ours with the prefix cache on; transformers' forward over
its own cache of the prefix). Medians over `--repeats` runs. The header
names the CPU, its ISA flags, the dtype and the weights. `--weights q4` adds our engine on
the GGUF's own 4-bit weights as a third system, beside dense weights and transformers.

    .venv/bin/python bench/engine.py [--dtype auto|float32|bfloat16] [--weights dense|q4]
                                     [--repeats 3] [--long-context 4064]
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
        self.model = model
        # The prefix cache is off: repeats of one prompt must cost what the first did, so
        # this measures the engine itself (bench/prefix.py measures the cache).
        self.engine = LLMEngine(model, EngineConfig(enable_prefix_caching=False))

    def run(self, prompts: list[list[int]], new_tokens: int) -> float:
        """Generate exactly `new_tokens` per prompt; returns the median TTFT (s)."""
        params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
        outs = self.engine.generate(prompts, params)
        assert all(len(o.token_ids) == new_tokens for o in outs)
        return statistics.median(o.ttft_s or 0.0 for o in outs)

    def decode_after(self, prompt: list[int], n: int) -> float:
        """Seconds from the first token to the `n`th after it (n decode steps)."""
        params = SamplingParams(max_tokens=n + 1, temperature=0, ignore_eos=True)
        start = time.perf_counter()
        [out] = self.engine.generate([prompt], params)
        assert len(out.token_ids) == n + 1 and out.ttft_s is not None
        return time.perf_counter() - start - out.ttft_s

    def hit_runner(self, prefix: list[int], tail: list[int]) -> Callable[[], Any]:
        cached = LLMEngine(self.model, EngineConfig())
        params = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
        cached.generate([[*prefix, tail[0]]], params)  # caches the prefix's blocks
        # One request per run: the prefix (whole blocks) is a hit, the tail is computed.
        return lambda: cached.generate([prefix + tail], params)


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

    @torch.inference_mode()
    def decode_after(self, prompt: list[int], n: int) -> float:
        """Seconds for `n` greedy single-token forwards over the prompt's cache."""
        from transformers import DynamicCache

        cache = DynamicCache()
        out = self.hf(torch.tensor([prompt], device=self.device), past_key_values=cache)
        start = time.perf_counter()
        for _ in range(n):
            token = out.logits[:, -1:].argmax(-1)
            out = self.hf(token, past_key_values=cache)
        return time.perf_counter() - start

    def hit_runner(self, prefix: list[int], tail: list[int]) -> Callable[[], Any]:
        from transformers import DynamicCache

        cache = DynamicCache()
        with torch.inference_mode():
            self.hf(torch.tensor([prefix], device=self.device), past_key_values=cache)
        ids = torch.tensor([tail], device=self.device)

        @torch.inference_mode()
        def run() -> Any:
            out = self.hf(ids, past_key_values=cache, logits_to_keep=1)
            cache.crop(-len(tail))  # back to the prefix alone
            return out.logits.argmax(-1)

        return run


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


def bench_long_decode(systems: list[Any], length: int, vocab: int, repeats: int) -> list[dict]:
    """Batch-1 decode of 32 tokens after a `length`-token prompt, each token attending to
    all of it; the prompt's prefill is timed apart and left out."""
    [prompt] = make_prompts(1, [length], vocab, seed=length + 1)
    rows = []
    for s in systems:
        t = statistics.median(s.decode_after(prompt, 32) for _ in range(repeats))
        rows.append(
            {"bench": "long decode", "system": s.name, "tokens": length, "tokens_per_s": 32 / t}
        )
    return rows


def bench_hit(systems: list[Any], length: int, vocab: int, repeats: int) -> list[dict]:
    """The hit path: a 32-token tail over a cached `length`-token prefix, up to its first
    token. Ours through an engine with the prefix cache on; transformers' forward over its
    own cache of the prefix (cropped back after each run)."""
    [prefix, tail] = make_prompts(2, [length, 32], vocab, seed=7)
    rows = []
    for s in systems:
        t = median_time(s.hit_runner(prefix, tail), repeats)
        rows.append({"bench": "hit", "system": s.name, "tokens": 32, "tokens_per_s": 32 / t})
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
            "long decode": f"batch 1 after {size} prompt tokens",
            "hit": f"{size}-token tail over a cached prefix",
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
    ap.add_argument(
        "--long-context", type=int, default=4064, help="decode and hit rows at this context"
    )
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
        f"weights {weights}\n# CPU: {cpu_model()}; PyTorch kernels "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    vocab = model.spec.vocab_size
    lengths = [int(x) for x in args.lengths.split(",")]
    rows = bench_prefill(systems, lengths, vocab, args.repeats)
    rows += bench_decode(systems, [1, 8], vocab, args.repeats, args.decode_tokens)
    rows += bench_batch(systems, vocab, args.repeats, args.batch_requests, args.decode_tokens)
    if args.long_context:
        rows += bench_long_decode(systems, args.long_context, vocab, args.repeats)
        rows += bench_hit(systems, args.long_context, vocab, args.repeats)
    print_table(rows, [s.name for s in systems])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
