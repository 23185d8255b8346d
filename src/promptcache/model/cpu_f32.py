"""Float32 linears for few rows on CPU by a small C kernel of our own
(`csrc/f32_matmul.c`), built at first use (`model.cbuild`).

A decode step multiplies a few rows by every weight, so its time is the weights' bytes.
PyTorch's float32 `F.linear` (MKL's sgemm/sgemv) reads them at a fraction of the memory's
speed on the AMD EPYC this was measured on (2 cores: 113 MB LM head 10 ms for one row and
17-22 ms for 8, where a plain sum over the same bytes takes 3.5-4 ms). The kernel streams
each weight once per call with AVX2 FMAs, 4 outputs by 2 rows at a time, the sums along K
joined at the end; it reads the weight tensor nn.Linear already holds (no copy).

`F32Linear` takes it below `MAX_ROWS` rows and `F.linear` from there (prefill chunks,
where MKL's blocked sgemm is the faster). Results equal F.linear's up to the order of the
float32 sums.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import subprocess
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptcache.model import cbuild

log = logging.getLogger(__name__)

# Rows below which F32Linear calls the kernel (measured per projection of the bundled
# model and its LM head, bench/int4.py's shapes, 2 cores, AMD EPYC; see docs/benchmarks.md).
MAX_ROWS = 16


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernel, or None (logged) where it cannot be built or loaded."""
    try:
        lib = cbuild.load("f32_matmul")
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("float32 matmul: C kernel unavailable (%s); F.linear serves", exc)
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.pc_f32_matmul.argtypes = [p, i64, i32, p, p, i32, i32, p, i64, i32]
    lib.pc_f32_matmul.restype = i32
    lib.pc_f32_paths.restype = i32
    return lib


@functools.cache
def _kernel() -> Any:
    lib = library()
    assert lib is not None, "library() is None"
    return lib.pc_f32_matmul


def matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (M, K) float32, rows contiguous, times weight (N, K) contiguous, plus bias (N,)."""
    m, k = x.shape
    n = weight.shape[0]
    if weight.shape[1] != k or x.stride(1) != 1 or x.dtype != torch.float32:
        raise ValueError(f"float32 matmul: x {tuple(x.shape)} {x.dtype} for weight {n}x{k}")
    y = x.new_empty((m, n))
    b = 0 if bias is None else bias.data_ptr()
    threads = torch.get_num_threads()
    err = _kernel()(
        x.data_ptr(), x.stride(0), m, weight.data_ptr(), b, n, k, y.data_ptr(), n, threads
    )
    if err:
        raise RuntimeError(f"float32 matmul kernel failed ({err})")
    return y


class F32Linear(nn.Module):
    """y = x W^T + b: the C kernel below MAX_ROWS rows, F.linear from there."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = weight.detach().contiguous()
        self.bias = None if bias is None else bias.detach().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, in) -> (T, out)
        if x.shape[0] >= MAX_ROWS:
            return F.linear(x, self.weight, self.bias)
        return matmul(x.contiguous(), self.weight, self.bias)


def can_use(device: torch.device, dtype: torch.dtype) -> bool:
    """True for float32 on a CPU where the kernel builds."""
    return device.type == "cpu" and dtype == torch.float32 and library() is not None


def use_f32_kernel(module: nn.Module) -> int:
    """Replace every `nn.Linear` inside `module` by an `F32Linear`; returns how many."""
    targets = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear)
    ]
    for parent, name, child in targets:
        setattr(parent, name, F32Linear(child.weight, child.bias))
    return len(targets)
