"""Per-layer attention time: context gathered from the block pool vs read in place.

    python bench/attention.py [--dtypes float32,bfloat16] [--repeats 50]

Shapes of the bundled model (9 query heads, 3 KV heads, head dim 64, blocks of 16). Each
row is one layer's attention for a step; the engine runs 30 such layers per step. Blocks
are laid out as a running server leaves them: a long prefix in ascending ids, later
blocks in descending runs (freed last-first). Decode cases cycle over up to 30 layers'
pools (at most 256 MB in all), so that as in the engine each call finds its keys and
values in memory, not in the CPU's caches. The allocator is tuned as the engine tunes it
(freed scratch memory stays in the heap). Prints the CPU and medians in ms
for three ways: the context gathered into one tensor then PyTorch's SDPA/flash kernel,
gathered then two batched matmuls, or (decode) read in place from the pool's runs, by
PyTorch's flash kernel per run or by our C decode kernel
(`promptcache.model.kernels.decode_attention`).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from promptcache.engine.host_memory import tune_host_malloc
from promptcache.model.attention.paged import (
    _decode_in_place,
    _gather,
    _prefill_attention,
    causal_mask,
    decode_mask,
    gather_rows,
    grouped_decode_attention,
    grouped_prefill_attention,
)
from promptcache.model.attention.pool_runs import decode_runs
from promptcache.model.device import cpu_model
from promptcache.model.kernels import decode_attention

H, KV, HD, BS = 9, 3, 64, 16


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of `fn` in ms over `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _tables(batch: int, ctx: int, shared: int) -> list[list[int]]:
    """`shared` prefix blocks (ascending ids) common to all; each sequence's own blocks
    follow in a descending run, as freed blocks come back."""
    n = -(-ctx // BS)
    prefix = list(range(shared))
    own = n - shared
    nxt = shared
    out = []
    for _ in range(batch):
        out.append(prefix + list(range(nxt + own - 1, nxt - 1, -1)))
        nxt += own
    return out


def _pool(dtype: torch.dtype, tables: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    nb = max(max(t) for t in tables) + 2
    return torch.randn(KV, nb, BS, HD).to(dtype), torch.randn(KV, nb, BS, HD).to(dtype)


def _layer_pools(dtype: torch.dtype, tables: list[list[int]]) -> Callable[[], tuple]:
    """A function returning the next layer's (K, V) pools, cycling over as many layers
    (up to 30) as fit in 256 MB."""
    first = _pool(dtype, tables)
    size = 2 * first[0].numel() * first[0].element_size()
    pools = [first] + [_pool(dtype, tables) for _ in range(min(29, (256 << 20) // size - 1))]
    turn = itertools.cycle(pools)
    return lambda: next(turn)


def _decode_case(
    dtype: torch.dtype, batch: int, ctx: int, shared: int, repeats: int
) -> tuple[float, float, float, float | None]:
    tables = _tables(batch, ctx, shared)
    layer = _layer_pools(dtype, tables)
    q = torch.randn(batch, H, HD).to(dtype)
    tab = torch.tensor(tables)
    mask = decode_mask(torch.full((batch,), ctx), tab.shape[1] * BS, None)
    rows, hidden = gather_rows(layer()[0], tab), ~mask

    def kernel() -> object:
        k_cache, v_cache = layer()
        keys, values = _gather(k_cache, tab, rows), _gather(v_cache, tab, rows)
        return F.scaled_dot_product_attention(
            q.unsqueeze(2), keys.transpose(0, 1), values.transpose(0, 1), mask, enable_gqa=True
        )

    def matmuls() -> object:
        k_cache, v_cache = layer()
        keys, values = _gather(k_cache, tab, rows), _gather(v_cache, tab, rows)
        return grouped_decode_attention(q, keys, values, hidden)

    runs = [decode_runs(t, ctx, BS) for t in tables]
    assert all(r is not None for r in runs)

    def in_place() -> object:
        return _decode_in_place(q, *layer(), runs)  # type: ignore[arg-type]

    lens = torch.full((batch,), ctx)

    def c_kernel() -> object:
        return decode_attention.decode_attention(q, *layer(), tab, lens)

    has_c = decode_attention.supports(dtype, H, KV, HD)
    times = median_ms(kernel, repeats), median_ms(matmuls, repeats), median_ms(in_place, repeats)
    return (*times, median_ms(c_kernel, repeats) if has_c else None)


def _prefill_case(
    dtype: torch.dtype, q_len: int, ctx: int, repeats: int
) -> tuple[float, float, None, None]:
    (table,) = _tables(1, ctx, (ctx - q_len) // BS)
    k_cache, v_cache = _pool(dtype, [table])
    q = torch.randn(q_len, H, HD).to(dtype)
    ids = torch.tensor(table)
    rows = gather_rows(k_cache, ids)
    mask = causal_mask(q_len, ctx, None, q.device)

    def kernel() -> object:
        keys, values = _gather(k_cache, ids, rows), _gather(v_cache, ids, rows)
        return _prefill_attention(q, keys[:, :ctx], values[:, :ctx], mask)

    def matmuls() -> object:
        keys, values = _gather(k_cache, ids, rows), _gather(v_cache, ids, rows)
        return grouped_prefill_attention(q, keys, values, ctx)

    return median_ms(kernel, repeats), median_ms(matmuls, repeats), None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    tune_host_malloc()  # as the engine does on CPU (EngineConfig.tune_host_malloc)
    print(f"# CPU: {cpu_model()}; torch threads {torch.get_num_threads()}")
    head = "| dtype | one layer's attention | gathered, SDPA | gathered, matmuls | in place |"
    print(head + " C kernel |")
    print("|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        cases: list[tuple[str, tuple[float, float, float | None, float | None]]] = [
            ("decode b1, 128", _decode_case(dtype, 1, 128, 0, args.repeats)),
            ("decode b1, 1k", _decode_case(dtype, 1, 1024, 0, args.repeats)),
            ("decode b1, 2k", _decode_case(dtype, 1, 2048, 0, args.repeats)),
            ("decode b1, 4.6k", _decode_case(dtype, 1, 4600, 280, args.repeats)),
            ("decode b8, 4.6k (4.5k shared)", _decode_case(dtype, 8, 4600, 280, args.repeats)),
            ("decode b8, 1k each", _decode_case(dtype, 8, 1024, 0, args.repeats)),
            ("decode b8, 128 each", _decode_case(dtype, 8, 128, 0, args.repeats)),
            ("chunk of 26 over 4.6k", _prefill_case(dtype, 26, 4626, args.repeats)),
            ("chunk of 128 over 4.6k", _prefill_case(dtype, 128, 4728, args.repeats)),
        ]
        for label, times in cases:
            print(
                f"| {name} | {label} | "
                + " | ".join("n/a" if t is None else f"{t:.3f}" for t in times)
                + " |"
            )


if __name__ == "__main__":
    main()
