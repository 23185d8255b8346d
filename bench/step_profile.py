"""Where an engine step's time goes: host (Python, by cProfile) and device (kernels, by
torch.profiler), for decode-only steps at one batch size; and the first requests after
start (a miss, then hits over its prefix), each timed, to show what a first shape costs.

    .venv/bin/python bench/step_profile.py --device cuda --shape llama-1b --batch 128
    .venv/bin/python bench/step_profile.py --batch 8 [--weights q4]   # bundled model, CPU

Prints ms a step (wall, with the device synchronized), the top host functions by own time
and the top device kernels by their time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch
from torch.profiler import ProfilerActivity, profile

from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.device import WEIGHTS, resolve_device, resolve_dtype
from promptcache.model.loading.loader import SHAPE_PREFIX, load_model
from promptcache.model.loading.shapes import SHAPES


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def tokens(n: int, vocab: int, seed: int) -> list[int]:
    return torch.randint(100, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def first_requests(engine: LLMEngine, vocab: int, device: torch.device, length: int) -> None:
    """A miss of `length` + 32 tokens, then three hits over its prefix with new tails."""
    prefix = tokens(length, vocab, seed=1)
    params = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
    print(f"\n| request after start ({length} + 32 tokens) | ms to its one token |\n|---|---|")
    for i, label in enumerate(["miss", "hit 1", "hit 2", "hit 3"]):
        sync(device)
        start = time.perf_counter()
        engine.generate([prefix + tokens(32, vocab, seed=10 + i)], params)
        sync(device)
        print(f"| {label} | {(time.perf_counter() - start) * 1e3:.1f} |")


def decode_steps(engine: LLMEngine, batch: int, steps: int, vocab: int) -> None:
    """Queue `batch` 128-token prompts and step until every one decodes."""
    params = SamplingParams(max_tokens=3 * steps + 8, temperature=0, ignore_eos=True)
    for i in range(batch):
        engine.add_request(tokens(128, vocab, seed=100 + i), params)
    while engine.scheduler.waiting or any(s.num_uncomputed > 1 for s in engine.scheduler.running):
        engine.step()
    for _ in range(3):
        engine.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--shape", default=None, choices=SHAPES)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--weights", default="dense", choices=WEIGHTS)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--prefix", type=int, default=4064, help="the first requests' prefix")
    ap.add_argument("--kv-cache-bytes", type=int, default=8 << 30)
    args = ap.parse_args()
    model_path = SHAPE_PREFIX + args.shape if args.shape else args.model
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model = load_model(model_path, device=device, dtype=dtype, weights=args.weights)
    config = EngineConfig(
        max_num_seqs=max(16, args.batch),
        max_num_batched_tokens=8192 if device.type == "cuda" else 1024,
        kv_cache_bytes=args.kv_cache_bytes,
    )
    engine = LLMEngine(model, config)
    print(
        f"# {model.path.name} on {device}, dtype {model.dtype}, weights {model.weights}, "
        f"batch {args.batch}"
    )
    vocab = model.spec.vocab_size
    first_requests(engine, vocab, device, args.prefix)

    decode_steps(engine, args.batch, args.steps, vocab)
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        engine.step()
    sync(device)
    ms = (time.perf_counter() - start) / args.steps * 1e3
    print(f"\ndecode step, batch {args.batch}: {ms:.2f} ms")

    host = cProfile.Profile()
    host.enable()
    for _ in range(args.steps):
        engine.step()
    sync(device)
    host.disable()
    text = io.StringIO()
    pstats.Stats(host, stream=text).sort_stats("tottime").print_stats(25)
    print(f"\n## host, {args.steps} steps (cProfile, by own time)\n")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip()))

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            engine.step()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n## device, {args.steps} steps (torch.profiler, by {key})\n")
    print(prof.key_averages().table(sort_by=key, row_limit=20, max_name_column_width=60))


if __name__ == "__main__":
    main()
