"""Our Triton paged-attention kernel's tiles, timed on a GPU beside PyTorch's SDPA.

    python bench/triton_tiles.py [--prefill 4096,16384] [--decode-batch 128] [--context 1024]

Llama-3.2-1B's attention (32 query heads, 8 KV heads, head size 64), bfloat16, blocks of
16 laid out in a shuffled order, as a long-running pool leaves them. For each launch
config (queries per prefill tile, keys per tile, warps a program) one layer's attention:
a whole prompt's prefill (causal), and a decode step of a batch over its contexts. Each
config's output is checked against SDPA's (flash) on the same keys laid out contiguously;
SDPA's time is printed beside, the floor a contiguous-cache engine would get. Medians of
`triton.testing.do_bench`, in ms. Needs CUDA (elsewhere, under `TRITON_INTERPRET=1`
with tiny sizes, a dry run of the script itself, one timed call each).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton

from promptcache.model.attention import triton_kernel as ta
from promptcache.model.attention.paged_tables import build_tables

H, KV, HD, BS = 32, 8, 64, 16
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bench(fn: Callable[[], object]) -> float:
    """Median ms of `fn` (one plain call where there is no GPU)."""
    if DEV.type == "cuda":
        return float(triton.testing.do_bench(fn, return_mode="median"))
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def pool(blocks: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device=DEV).manual_seed(seed)
    shape = (KV, blocks, BS, HD)
    k = torch.randn(shape, generator=g, device=DEV, dtype=torch.bfloat16)
    return k, torch.randn(shape, generator=g, device=DEV, dtype=torch.bfloat16)


def contiguous(cache: torch.Tensor, table: list[int], n: int) -> torch.Tensor:
    """(KV, n, HD): a sequence's keys or values in order."""
    return cache[:, torch.tensor(table, device=DEV)].reshape(KV, -1, HD)[:, :n]


def case(
    ctx: list[int], qlens: list[int], seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[list[int]]]:
    """Queries, a pool holding every sequence's context in shuffled blocks, the tables."""
    need = [-(-c // BS) for c in ctx]
    k, v = pool(sum(need) + 1, seed)
    ids = torch.randperm(sum(need), generator=torch.Generator().manual_seed(seed)).tolist()
    lists, at = [], 0
    for n in need:
        lists.append(ids[at : at + n])
        at += n
    q = torch.randn(sum(qlens), H, HD, device=DEV, dtype=torch.bfloat16)
    return q, k, v, lists


def sdpa(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (n, H, HD) over the last n of the context's keys."""
    n, c = q.shape[0], keys.shape[1]
    mask = (
        None
        if n == c
        else (torch.arange(c, device=DEV)[None] <= torch.arange(c - n, c, device=DEV)[:, None])
    )
    o = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None],
        keys[None],
        values[None],
        attn_mask=mask,
        is_causal=mask is None,
        enable_gqa=True,
    )
    return o[0].transpose(0, 1)


def run(
    label: str, ctx: list[int], qlens: list[int], block_qs: list[int], warps: list[int]
) -> None:
    seqs = len(ctx)
    q0, k, v, lists = case(ctx, qlens, seed=1)
    keys = [contiguous(k, t, c) for t, c in zip(lists, ctx, strict=True)]
    values = [contiguous(v, t, c) for t, c in zip(lists, ctx, strict=True)]
    starts = [sum(qlens[:i]) for i in range(seqs)]

    def reference() -> torch.Tensor:
        if seqs == 1:
            return sdpa(q0, keys[0], values[0])
        # decode: one query per sequence, contexts of one length, batched
        qb = q0[:, None].transpose(1, 2)  # (B, H, 1, HD)
        return F.scaled_dot_product_attention(
            qb, torch.stack(keys), torch.stack(values), enable_gqa=True
        ).transpose(1, 2)[:, 0]

    ref = reference()
    t_ref = bench(reference)
    print(f"\n## {label}\n\n| block_q | key tile | warps | ms | max abs diff vs SDPA |")
    print("|---|---|---|---|---|")
    print(f"| SDPA (contiguous K/V) | | | {t_ref:.3f} | |")
    best = None
    for block_q, tile, w in itertools.product(block_qs, (32, 64, 128), warps):
        tables = build_tables(lists, ctx, starts, qlens, block_q, DEV)
        out = torch.zeros_like(q0)

        launch = functools.partial(
            ta.paged_attention, q0, k, v, tables, out, key_tile=tile, num_warps=w
        )

        try:
            launch()
            t = bench(launch)
        except Exception as e:  # a config the compiler refuses (out of shared memory)
            print(f"| {block_q} | {tile} | {w} | failed: {type(e).__name__} | |")
            continue
        diff = (out.float() - ref.float()).abs().max().item()
        print(f"| {block_q} | {tile} | {w} | {t:.3f} | {diff:.4f} |")
        if diff < 0.05 and (best is None or t < best[0]):
            best = (t, block_q, tile, w)
    if best:
        t, block_q, tile, w = best
        print(f"\nbest: block_q {block_q}, key tile {tile}, {w} warps: {t:.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefill", default="4096,16384")
    ap.add_argument("--decode-batch", type=int, default=128)
    ap.add_argument("--context", type=int, default=1024)
    args = ap.parse_args()
    name = torch.cuda.get_device_name(0) if DEV.type == "cuda" else "CPU (interpreted)"
    print(f"# {name}, torch {torch.__version__}, triton {triton.__version__}")
    for n in map(int, args.prefill.split(",")):
        run(f"prefill {n} tokens, one sequence", [n], [n], [16, 32, 64], [4, 8])
    b, c = args.decode_batch, args.context
    run(f"decode batch {b}, context {c}", [c] * b, [1] * b, [1], [1, 2, 4])


if __name__ == "__main__":
    main()
