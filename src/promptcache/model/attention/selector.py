"""Which attention backend serves a step: the Triton kernel, our C decode kernel, or
PyTorch's paths. Kept free of Triton so that the engine can choose on machines without
it. `EngineConfig.attention_backend` names the choice:

- "auto" (default): on CUDA the Triton kernel where Triton imports and the model's head
  size (a power of 2, at least 16) and the block size (a power of 2) suit it; on CPU the
  C decode kernel (`promptcache.model.kernels.decode_attention`) for decode rows where it
  builds (float32 or bfloat16, no sliding window), PyTorch's paths for the rest;
- "torch": PyTorch's paths (gather, then SDPA or matmuls) on any device;
- "triton": the Triton kernel, or an error where it cannot run.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from promptcache.model.attention.backend import AttentionBackend
from promptcache.model.attention.torch_backend import CpuKernelBackend, TorchBackend
from promptcache.model.attention.triton_backend import TritonBackend
from promptcache.model.spec import ModelSpec
from promptcache.util import ATTENTION_BACKENDS


def kernel_fits(head_dim: int, block_size: int) -> bool:
    """The kernel's tiles need a power-of-two head size of at least 16 (a tensor-core
    dot's depth) and a power-of-two block size."""
    powers = all(n >= 1 and n & (n - 1) == 0 for n in (head_dim, block_size))
    return powers and head_dim >= 16


def uses_cpu_decode(
    backend: str, device: torch.device, dtype: torch.dtype, spec: ModelSpec
) -> bool:
    """Whether CPU decode rows go through the C kernel (see the module docstring)."""
    if backend != "auto" or device.type != "cpu" or spec.sliding_window is not None:
        return False
    from promptcache.model.kernels import decode_attention

    return decode_attention.supports(dtype, spec.num_heads, spec.num_kv_heads, spec.head_dim)


def uses_triton(backend: str, device: torch.device, head_dim: int, block_size: int) -> bool:
    """Whether attention runs through the Triton kernel (see the module docstring);
    ValueError where "triton" is asked for and cannot run."""
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(
            f"attention_backend must be one of {', '.join(ATTENTION_BACKENDS)}, got {backend!r}"
        )
    if backend == "torch":
        return False
    fits = kernel_fits(head_dim, block_size)
    has_triton = importlib.util.find_spec("triton") is not None
    # Off CUDA the kernel runs only under Triton's interpreter (the tests).
    runs_here = device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    if backend == "auto":
        return device.type == "cuda" and fits and has_triton
    problems = [
        *([] if has_triton else ["Triton is not installed"]),
        *([] if runs_here else [f"it needs a CUDA device, not {device.type}"]),
        *(
            []
            if fits
            else [
                f"head size {head_dim} must be a power of 2 >= 16, "
                f"block size {block_size} a power of 2"
            ]
        ),
    ]
    if problems:
        raise ValueError("attention_backend 'triton' cannot run: " + "; ".join(problems))
    return True


def select_backend(
    name: str,
    device: torch.device,
    dtype: torch.dtype,
    spec: ModelSpec,
    block_size: int,
    max_seqs: int,
    max_tokens: int,
) -> AttentionBackend:
    """The backend `attention_backend=name` gives here (see the module docstring), built
    for a pool of `block_size`-token blocks of `dtype`; the Triton one keeps device tables
    for up to `max_seqs` sequences of at most `max_tokens` tokens. ValueError where
    "triton" is asked for and cannot run."""
    window = spec.sliding_window
    if uses_triton(name, device, spec.head_dim, block_size):
        return TritonBackend(device, block_size, window, max_seqs, max_tokens)
    if uses_cpu_decode(name, device, dtype, spec):
        return CpuKernelBackend(device, dtype, block_size, window)
    return TorchBackend(device, dtype, block_size, window)
