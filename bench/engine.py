"""Engine benchmark: promptcache beside plain transformers `generate`, same prompts, same run.

Prints prefill tokens/s at several prompt lengths, decode tokens/s (and ms a step) at
several batch sizes, the throughput of a batch of mixed-length requests, decode at batch 1
after a long prompt (`--long-context`, 4,064 tokens) and the hit path: a 32-token tail
over that many cached tokens, up to its first token (ours with the prefix cache on;
transformers' forward over its own cache of the prefix), beside the miss (the whole
prompt computed). Medians over `--repeats` runs, the systems' runs taken in turn (round
after round), so that a machine that slows for a while slows every system alike;
`--benches decode,hit` runs only those rows. The header names the device (on a CPU its
model and ISA flags), the dtype and the weights. `--weights q4` adds our engine on the
GGUF's own 4-bit weights as a third system, beside dense weights and transformers.
`--shape llama-1b` (or any of `promptcache.model.loading.shapes.SHAPES`) benchmarks a
random-weight model of that shape, written once, nothing downloaded.

    .venv/bin/python bench/engine.py [--dtype auto|float32|bfloat16] [--weights dense|q4]
                                     [--repeats 3] [--long-context 4064]
    .venv/bin/python bench/engine.py --device cuda --shape llama-1b   # batches 1,32,128;
                                     # prompts of 4k and 16k; 8k-token steps
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from promptcache.cli.settings import parse_bytes
from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.device import WEIGHTS, cpu_model, resolve_device, resolve_dtype
from promptcache.model.kernels import layer_ops
from promptcache.model.loading.loader import SHAPE_PREFIX, describe_linears, load_model
from promptcache.model.loading.shapes import SHAPES
from promptcache.util import ATTENTION_BACKENDS


def sync() -> None:
    """Wait for the GPU's queued work (timings end when results exist, not when queued)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> float:
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def interleaved(fns: list[Callable[[], float]], repeats: int) -> list[float]:
    """The median of each function's result (a time), the functions run in turn, one
    round after another: a machine that slows down for a while (shared hosts do) then
    slows every system's repeats alike instead of one system's."""
    results: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for out, fn in zip(results, fns, strict=True):
            out.append(fn())
    return [statistics.median(r) for r in results]


def make_prompts(n: int, lengths: list[int], vocab: int, seed: int) -> list[list[int]]:
    """Seeded random prompts of ordinary tokens (ids above the special tokens)."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(100, vocab, (lengths[i % len(lengths)],), generator=g).tolist()
        for i in range(n)
    ]


BENCHES = ("prefill", "decode", "batch", "long", "hit")  # the rows, in the tables' order
HIT_POOL_BYTES = 2 << 30  # the hit bench's own engine: room for a 4k prompt many times


class Ours:
    def __init__(self, model: Any, config: EngineConfig) -> None:
        self.name = "promptcache q4" if model.weights == "q4" else "promptcache"
        self.model = model
        self.config = config
        # The prefix cache is off: repeats of one prompt must cost what the first did, so
        # this measures the engine itself (bench/prefix.py measures the cache).
        self.engine = LLMEngine(model, replace(config, enable_prefix_caching=False))

    def run(self, prompts: list[list[int]], new_tokens: int) -> float:
        """Generate exactly `new_tokens` per prompt; returns the median TTFT (s)."""
        params = SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True)
        outs = self.engine.generate(prompts, params)
        assert all(len(o.token_ids) == new_tokens for o in outs)
        return statistics.median(o.ttft_s or 0.0 for o in outs)

    def decode_after(self, prompt: list[int], n: int) -> float:
        """Seconds from the first token to the `n`th after it (n decode steps)."""
        params = SamplingParams(max_tokens=n + 1, temperature=0, ignore_eos=True)
        sync()
        start = time.perf_counter()
        [out] = self.engine.generate([prompt], params)
        assert len(out.token_ids) == n + 1 and out.ttft_s is not None
        return time.perf_counter() - start - out.ttft_s

    def hit_runner(self, prefix: list[int], tail: list[int]) -> Callable[[], Any]:
        # A second engine, with the cache on. Its pool holds this prompt many times over;
        # a second pool of the full size beside the first (24 GiB each on a GPU) left the
        # GPU's allocator short, and its retries (~0.75 s) landed in the hit's time.
        pool = min(self.config.kv_cache_bytes, HIT_POOL_BYTES)
        cached = LLMEngine(self.model, replace(self.config, kv_cache_bytes=pool))
        params = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
        cached.generate([[*prefix, tail[0]]], params)  # caches the prefix's blocks
        # One request per run: the prefix (whole blocks) is a hit, the tail is computed.
        return lambda: cached.generate([prefix + tail], params)

    def miss_runner(self, prompt: list[int]) -> Callable[[], Any]:
        return lambda: self.run([prompt], 1)


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
        sync()
        start = time.perf_counter()
        for _ in range(n):
            token = out.logits[:, -1:].argmax(-1)
            out = self.hf(token, past_key_values=cache)
        sync()
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

    def miss_runner(self, prompt: list[int]) -> Callable[[], Any]:
        ids = torch.tensor([prompt], device=self.device)

        @torch.inference_mode()
        def run() -> Any:
            return self.hf(ids, logits_to_keep=1).logits.argmax(-1)

        return run


def bench_prefill(systems: list[Any], lengths: list[int], vocab: int, repeats: int) -> list[dict]:
    rows = []
    for n in lengths:
        [prompt] = make_prompts(1, [n], vocab, seed=n)
        runs = [lambda s=s, p=prompt: timed(lambda: s.run([p], 1)) for s in systems]
        for run in runs:
            run()  # warm-up
        for s, t in zip(systems, interleaved(runs, repeats), strict=True):
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
    """Per decode step: (time to `new_tokens` tokens - time to the first) / the steps
    between, both medians over repeats taken in turn with the other systems'."""
    rows = []
    for b in batches:
        prompts = make_prompts(b, [128], vocab, seed=b)
        for s in systems:
            s.run(prompts, 2)  # warm-up: this batch's prefill and decode shapes
        runs = [
            lambda s=s, n=n, p=prompts: timed(lambda: s.run(p, n))
            for s in systems
            for n in (1, new_tokens)
        ]
        times = interleaved(runs, repeats)
        for i, s in enumerate(systems):
            step = (times[2 * i + 1] - times[2 * i]) / (new_tokens - 1)
            rows.append(
                {
                    "bench": "decode",
                    "system": s.name,
                    "batch": b,
                    "tokens_per_s": b / step,
                    "ms_per_step": step * 1e3,
                }
            )
    return rows


def bench_long_decode(systems: list[Any], length: int, vocab: int, repeats: int) -> list[dict]:
    """Batch-1 decode of 32 tokens after a `length`-token prompt, each token attending to
    all of it; the prompt's prefill is timed apart and left out."""
    [prompt] = make_prompts(1, [length], vocab, seed=length + 1)
    runs = [lambda s=s: s.decode_after(prompt, 32) for s in systems]
    return [
        {"bench": "long decode", "system": s.name, "tokens": length, "tokens_per_s": 32 / t}
        for s, t in zip(systems, interleaved(runs, repeats), strict=True)
    ]


def bench_hit(systems: list[Any], length: int, vocab: int, repeats: int) -> list[dict]:
    """The hit path: a 32-token tail over a cached `length`-token prefix, up to its first
    token. Ours through an engine with the prefix cache on; transformers' forward over its
    own cache of the prefix (cropped back after each run). Beside it the miss: the same
    prompt computed whole (ours with the cache off; transformers' forward, no cache)."""
    [prefix, tail] = make_prompts(2, [length, 32], vocab, seed=7)
    runs = []
    for s in systems:
        hit_run, miss_run = s.hit_runner(prefix, tail), s.miss_runner(prefix + tail)
        hit_run()  # warm-up (a first shape costs kernel selection and compiles on GPUs)
        miss_run()
        runs += [lambda f=hit_run: timed(f), lambda f=miss_run: timed(f)]
    times = interleaved(runs, repeats)
    rows = []
    for i, s in enumerate(systems):
        hit, miss = times[2 * i], times[2 * i + 1]
        rows.append(
            {
                "bench": "hit",
                "system": s.name,
                "tokens": 32,
                "context": length,
                "tokens_per_s": 32 / hit,
                "hit_ttft_ms": hit * 1e3,
                "miss_ttft_ms": miss * 1e3,
            }
        )
    return rows


def bench_batch(
    systems: list[Any], vocab: int, repeats: int, n: int, new_tokens: int
) -> list[dict]:
    lengths = [128, 256, 384, 512, 640, 768, 896, 1024]
    prompts = make_prompts(n, lengths, vocab, seed=99)
    runs = [lambda s=s: timed(lambda: s.run(prompts, new_tokens)) for s in systems]
    rows = []
    for s, t in zip(systems, interleaved(runs, repeats), strict=True):
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


def print_latencies(rows: list[dict]) -> None:
    """Decode ms a step by batch, and hit vs miss time to first token, per system."""
    print("\n| system | bench | size | ms | hit / miss |\n|---|---|---|---|---|")
    for r in rows:
        if r["bench"] == "decode":
            print(
                f"| {r['system']} | decode step | batch {r['batch']} | {r['ms_per_step']:.2f} | |"
            )
        elif r["bench"] == "hit":
            ratio = r["hit_ttft_ms"] / r["miss_ttft_ms"]
            ctx = f"{r['context']} + 32 tokens"
            print(f"| {r['system']} | hit TTFT | {ctx} | {r['hit_ttft_ms']:.1f} | {ratio:.3f} |")
            print(f"| {r['system']} | miss TTFT | {ctx} | {r['miss_ttft_ms']:.1f} | |")


# Defaults that differ by device: (CPU, CUDA).
DEVICE_DEFAULTS = {
    "lengths": ("1024,2048,4096", "4096,16384"),
    "batches": ("1,8", "1,32,128"),
    "max_num_batched_tokens": (1024, 8192),
    "kv_cache_bytes": ("2GiB", "24GiB"),
}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="default: the bundled model")
    ap.add_argument("--shape", default=None, choices=SHAPES, help="random weights, this shape")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--weights", default="dense", choices=WEIGHTS, help="q4: also 4-bit")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--lengths", default=None, help="prefill rows (CPU 1024,2048,4096; CUDA 4k,16k)"
    )
    ap.add_argument("--batches", default=None, help="decode rows (CPU 1,8; CUDA 1,32,128)")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--batch-requests", type=int, default=16)
    ap.add_argument(
        "--long-context", type=int, default=4064, help="decode and hit rows at this context"
    )
    ap.add_argument("--max-num-batched-tokens", type=int, default=None, help="CPU 1024, CUDA 8192")
    ap.add_argument("--kv-cache-bytes", default=None, help="our KV pool (CPU 2GiB, CUDA 24GiB)")
    ap.add_argument("--attention-backend", default="auto", choices=ATTENTION_BACKENDS)
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument(
        "--benches", default=",".join(BENCHES), help=f"which rows, of {','.join(BENCHES)}"
    )
    args = ap.parse_args()
    unknown = set(args.benches.split(",")) - set(BENCHES)
    if unknown:
        ap.error(f"unknown --benches {sorted(unknown)}; choose from {BENCHES}")
    if args.shape:
        if args.model:
            ap.error("--shape and --model exclude each other")
        args.model = SHAPE_PREFIX + args.shape
    return args


def engine_config(args: argparse.Namespace, device: torch.device, batches: list[int]) -> Any:
    """Our engine's settings for this run: room for the largest batch and its KV."""
    cuda = device.type == "cuda"
    tokens = args.max_num_batched_tokens or DEVICE_DEFAULTS["max_num_batched_tokens"][cuda]
    kv = parse_bytes(args.kv_cache_bytes or DEVICE_DEFAULTS["kv_cache_bytes"][cuda])
    return EngineConfig(
        max_num_seqs=max(16, *batches),
        max_num_batched_tokens=tokens,
        kv_cache_bytes=kv,
        attention_backend=args.attention_backend,
    )


def header(model: Any, device: torch.device, weights: str) -> str:
    dtype = str(model.dtype).removeprefix("torch.")
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
        return f"# {model.path.name} on {device} ({where}), dtype {dtype}, weights {weights}"
    return (
        f"# {model.path.name} on {device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), dtype {dtype}, weights {weights}\n"
        f"# CPU: {cpu_model()}; PyTorch kernels {torch.backends.cpu.get_cpu_capability()}"
    )


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batches = [int(x) for x in (args.batches or DEVICE_DEFAULTS["batches"][cuda]).split(",")]
    lengths = [int(x) for x in (args.lengths or DEVICE_DEFAULTS["lengths"][cuda]).split(",")]
    model = load_model(args.model, device=device, dtype=resolve_dtype(args.dtype, device))
    config = engine_config(args, device, batches)
    systems: list[Any] = [Ours(model, config)]
    weights = "dense"
    if args.weights == "q4":
        q4 = load_model(args.model, device=device, dtype=model.dtype, weights="q4")
        weights = "dense and 4-bit" if q4.weights == "q4" else "dense (4-bit unavailable)"
        if q4.weights == "q4":
            systems.append(Ours(q4, config))
    systems.append(Transformers(model))
    print(header(model, device, weights))
    runner = systems[0].engine.runner
    kernels = "Triton" if runner.triton else "C decode, PyTorch" if runner.cpu_decode else "PyTorch"
    print(f"# attention: {kernels}")
    if not cuda:
        print(f"# linears: {describe_linears(model.dtype, 'dense')}")
        print(f"# layer steps: {layer_ops.describe(model.dtype)}")
        if weights == "dense and 4-bit":
            print(f"# linears, 4-bit: {describe_linears(model.dtype, 'q4')}")
            print(f"# layer steps, 4-bit: {layer_ops.describe(model.dtype, 'q4')}")
            one_call = systems[1].engine.runner.cpu_step is not None
            print(f"# 4-bit decode steps: {'one C call' if one_call else 'module by module'}")
    vocab, wanted, rows = model.spec.vocab_size, args.benches.split(","), []
    if "prefill" in wanted:
        rows += bench_prefill(systems, lengths, vocab, args.repeats)
    if "decode" in wanted:
        rows += bench_decode(systems, batches, vocab, args.repeats, args.decode_tokens)
    if "batch" in wanted:
        rows += bench_batch(systems, vocab, args.repeats, args.batch_requests, args.decode_tokens)
    if args.long_context and "long" in wanted:
        rows += bench_long_decode(systems, args.long_context, vocab, args.repeats)
    if args.long_context and "hit" in wanted:
        rows += bench_hit(systems, args.long_context, vocab, args.repeats)
    print_table(rows, [s.name for s in systems])
    print_latencies(rows)
    if cuda:  # each retry frees the allocator's cached memory and stalls the GPU
        retries = torch.cuda.memory_stats(device).get("num_alloc_retries", 0)
        print(f"\n# CUDA allocator retries during the run: {retries}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
