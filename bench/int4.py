"""Per-projection matmul time with 4-bit weights against dense ones, by the number of rows
(tokens) multiplied at once: our C kernel (`model/q4_matmul.py`) with bfloat16 and float32
rows, PyTorch's packed int4 CPU kernel (bfloat16 rows), oneDNN's prepacked bfloat16 and
float32 matmuls (the engine's dense linears), and float32 `F.linear` (MKL).

    python bench/int4.py [--rows 1,4,8,16,32,64] [--repeats 50]

Shapes of the bundled model's projections (576 -> 960 fused q/k/v, 576 -> 3,072 fused
gate/up, 1,536 -> 576 down). Each call takes the next of 30 layers' weights, so that as in
a decode step the weights come from memory, not from the CPU's caches. Random codes and
scales: the kernels' time does not depend on the values. Prints the CPU, the paths our
kernel takes here, and medians in ms.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Iterator

import torch

from attention import median_ms  # bench/attention.py, beside this script
from promptcache.engine.host_memory import tune_host_malloc
from promptcache.model.device import cpu_model
from promptcache.model.kernels import q4_matmul
from promptcache.model.quant import GROUP, Q4Tensor

SHAPES = [("q/k/v", 960, 576), ("gate/up", 3072, 576), ("down", 576, 1536)]
LAYERS = 30
COLUMNS = [
    "ours bf16",
    "PyTorch int4 bf16",
    "dense bf16",
    "ours fp32",
    "dense fp32",
    "F.linear fp32",
]


def _kernels(n: int, k: int) -> dict[str, Callable[[torch.Tensor], object]]:
    """One function of the rows per column, each cycling through 30 layers' weights."""
    qs = [
        Q4Tensor(
            torch.randint(0, 16, (n, k), dtype=torch.uint8),
            torch.rand(n, k // GROUP),
            torch.rand(n, k // GROUP),
        )
        for _ in range(LAYERS)
    ]
    ours = itertools.cycle([q4_matmul.pack(q) for q in qs])
    pack_int4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu
    int4 = itertools.cycle([pack_int4(q.codes.to(torch.int32), 1) for q in qs])
    scale_zeros = torch.randn(k // GROUP, n, 2).bfloat16()
    reorder = torch.ops.mkldnn._reorder_linear_weight
    bf16 = itertools.cycle([reorder(torch.randn(n, k).bfloat16()) for _ in range(LAYERS)])
    fp32 = itertools.cycle([torch.randn(n, k) for _ in range(LAYERS)])
    fp32_packed = itertools.cycle([reorder(torch.randn(n, k)) for _ in range(LAYERS)])

    def by_ours(x: torch.Tensor, it: Iterator = ours) -> object:
        return q4_matmul.matmul(x, next(it))

    return {
        "ours bf16": by_ours,
        "PyTorch int4 bf16": lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, next(int4), GROUP, scale_zeros
        ),
        "dense bf16": lambda x: torch.ops.mkldnn._linear_pointwise(
            x, next(bf16), None, "none", [], ""
        ),
        "ours fp32": by_ours,
        "dense fp32": lambda x: torch.ops.mkldnn._linear_pointwise(
            x, next(fp32_packed), None, "none", [], ""
        ),
        "F.linear fp32": lambda x: torch.nn.functional.linear(x, next(fp32)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", default="1,4,8,16,32,64")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    if q4_matmul.library() is None:
        raise SystemExit("our 4-bit kernel could not be built here (see the warning above)")
    tune_host_malloc()  # as the engine does on CPU
    rows = [int(r) for r in args.rows.split(",")]
    paths = ", ".join(q4_matmul.paths()) or "compiler-vectorized loops"
    print(f"# CPU: {cpu_model()}; torch threads {torch.get_num_threads()}; our paths: {paths}")
    print(f"| projection | rows | {' | '.join(COLUMNS)} (ms) | dense bf16 / ours | fp32 / ours |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 2))
    for name, n, k in SHAPES:
        kernels = _kernels(n, k)
        for m in rows:
            x = torch.randn(m, k)
            xs = {c: x.bfloat16() if "bf16" in c else x for c in COLUMNS}  # converted before
            t = {
                c: median_ms(lambda f=f, x=xs[c]: f(x), args.repeats, warmup=5)
                for c, f in kernels.items()
            }
            cells = " | ".join(f"{t[c]:.3f}" for c in COLUMNS)
            bf16, fp32 = t["dense bf16"] / t["ours bf16"], t["dense fp32"] / t["ours fp32"]
            ratios = f"{bf16:.2f}x | {fp32:.2f}x"
            print(f"| {name} {k}->{n} | {m} | {cells} | {ratios} |")


if __name__ == "__main__":
    main()
