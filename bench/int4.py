"""Per-projection matmul time: PyTorch's packed int4 CPU kernel against oneDNN's prepacked
bfloat16 one, by the number of rows (tokens) multiplied at once.

    python bench/int4.py [--rows 1,2,4,8,16] [--repeats 100]

Shapes of the bundled model's projections (576 -> 960 fused q/k/v, 576 -> 3,072 fused
gate/up, 1,536 -> 576 down). Each call takes the next of 30 layers' weights, so that as in
a decode step the weights come from memory, not from the CPU's caches. Random codes and
scales: the kernels' time does not depend on the values. Prints the CPU and medians in ms.
"""

from __future__ import annotations

import argparse
import itertools

import torch

from attention import median_ms  # bench/attention.py, beside this script
from promptcache.engine.host_memory import tune_host_malloc
from promptcache.model.device import cpu_model
from promptcache.model.q4 import GROUP

SHAPES = [("q/k/v", 960, 576), ("gate/up", 3072, 576), ("down", 576, 1536)]
LAYERS = 30


def _case(n: int, k: int, rows: list[int], repeats: int) -> list[tuple[int, float, float]]:
    pack_int4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu
    int4 = itertools.cycle(
        [pack_int4(torch.randint(0, 16, (n, k), dtype=torch.int32), 1) for _ in range(LAYERS)]
    )
    scale_zeros = torch.randn(k // GROUP, n, 2).bfloat16()
    reorder = torch.ops.mkldnn._reorder_linear_weight
    dense = itertools.cycle([reorder(torch.randn(n, k).bfloat16()) for _ in range(LAYERS)])
    out = []
    for m in rows:
        x = torch.randn(m, k).bfloat16()

        def by_int4(x: torch.Tensor = x) -> object:
            return torch.ops.aten._weight_int4pack_mm_for_cpu(x, next(int4), GROUP, scale_zeros)

        def by_dense(x: torch.Tensor = x) -> object:
            return torch.ops.mkldnn._linear_pointwise(x, next(dense), None, "none", [], "")

        t4, td = (median_ms(f, repeats, warmup=5) for f in (by_int4, by_dense))
        out.append((m, t4, td))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", default="1,2,4,8,16")
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()
    tune_host_malloc()  # as the engine does on CPU
    rows = [int(r) for r in args.rows.split(",")]
    print(f"# CPU: {cpu_model()}; torch threads {torch.get_num_threads()}")
    print("| projection | rows | int4 (ms) | bf16 prepacked (ms) | bf16 / int4 |")
    print("|---|---|---|---|---|")
    for name, n, k in SHAPES:
        for m, t4, td in _case(n, k, rows, args.repeats):
            print(f"| {name} {k}->{n} | {m} | {t4:.3f} | {td:.3f} | {td / t4:.2f}x |")


if __name__ == "__main__":
    main()
