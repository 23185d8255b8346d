"""A decoder layer's small element-wise steps by a C kernel of our own
(`csrc/layer_ops.c`), built at first use (`model.kernels.build`).

A decode step of a few rows spends more time calling PyTorch's kernels than computing:
the residual add and RMS norm take 6-8 calls (~17 us for 8 rows of 576, bfloat16, 2
cores), SiLU(gate) * up 4 (~16 us), the rotary embedding of q and k with the K/V write
into the pool 8 (~23 us), twice a layer for the norm. Each is one pass in C here:

- `rope_kv`: q and k rotated in place in the fused projection's output, k and v written
  into the pools at their slots. The bits of PyTorch's ops in float32 and bfloat16
  (products and sums rounded as PyTorch rounds them; built with -ffp-contract=off).
- `add_rms_norm` and `silu_mul`: float32 like PyTorch, but the sum of squares in another
  order and glibc's exp instead of PyTorch's, so an output may round to the neighbouring
  bfloat16 (rarely; float32: in its last bits). Dense float32 models keep PyTorch's ops,
  whose bits equal transformers'; 4-bit ones, whose logits are not transformers' anyway,
  take these (`model.layers.kernel_set`).

Where the kernel cannot be built, `library()` is None (logged once) and the layers keep
PyTorch's ops.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from promptcache.model.kernels import build
from promptcache.model.kernels.build import F32, I32, I64, P, Signature

_ROPE = {torch.bfloat16: "pc_rope_kv_bf16", torch.float32: "pc_rope_kv_f32"}
_NORM = {torch.bfloat16: "pc_add_rms_norm_bf16", torch.float32: "pc_add_rms_norm_f32"}
_SILU = {torch.bfloat16: "pc_silu_mul_bf16", torch.float32: "pc_silu_mul_f32"}
DTYPES = tuple(_ROPE)


def symbol(kind: str, dtype: torch.dtype) -> str:
    """The C function of a step ("rope", "norm", "silu") for rows of `dtype`."""
    return {"rope": _ROPE, "norm": _NORM, "silu": _SILU}[kind][dtype]


_ROPE_ARGS = [P, I64, I64, I32, I32, I32, P, P, I64, P, P, I64, P, I64, I32]
_NORM_ARGS = [P, I64, P, I64, P, P, I64, I64, I64, F32, I32]
_SILU_ARGS = [P, I64, P, I64, I64, I64, I32]
SIGNATURES: dict[str, Signature] = {
    **{name: (_NORM_ARGS, I32) for name in _NORM.values()},
    **{name: (_SILU_ARGS, I32) for name in _SILU.values()},
    **{name: (_ROPE_ARGS, I32) for name in _ROPE.values()},
}


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built kernel, or None (logged) where it cannot be built or loaded."""
    return build.library("layer_ops", SIGNATURES, flags=("-ffp-contract=off",))


def describe(dtype: torch.dtype, weights: str = "dense") -> str:
    """Which of a layer's small steps run in C for rows of `dtype` and these weights here
    (for logs): all of them, but in dense float32 the rotary embedding only."""
    if library() is None or dtype not in _ROPE:
        return "PyTorch"
    every = dtype == torch.bfloat16 or weights == "q4"
    steps = "rotary + K/V write" + (", add + RMS norm, SiLU x up" if every else "")
    return f"promptcache C ({steps})"


def _rows(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dim() == 2 and x.stride(1) == 1


def fuses_norm(x: torch.Tensor, h: torch.Tensor | None, weight: torch.Tensor) -> bool:
    """Whether `add_rms_norm` serves this residual stream x, addend h and norm weight."""
    if x.dtype not in _NORM or weight.dtype != x.dtype or not _rows(x):
        return False
    if h is not None and (h.dtype != x.dtype or h.shape != x.shape or not _rows(h)):
        return False
    return weight.is_contiguous() and library() is not None


def add_rms_norm(
    x: torch.Tensor, h: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> torch.Tensor:
    """x += h in place (h None: x as it is), then returns weight * rms_norm(x); bfloat16
    rows (T, D) (see `fuses_norm`)."""
    lib = library()
    assert lib is not None and fuses_norm(x, h, weight)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    t, d = x.shape
    err = getattr(lib, _NORM[x.dtype])(
        x.data_ptr(),
        x.stride(0),
        None if h is None else h.data_ptr(),
        0 if h is None else h.stride(0),
        weight.data_ptr(),
        y.data_ptr(),
        y.stride(0),
        t,
        d,
        eps,
        torch.get_num_threads(),
    )
    _check(err, "RMS norm")
    return y


def fuses_silu(gate_up: torch.Tensor) -> bool:
    """Whether `silu_mul` serves these gate-and-up rows."""
    return gate_up.dtype in _SILU and _rows(gate_up) and library() is not None


def silu_mul(gate_up: torch.Tensor, inter: int) -> torch.Tensor:
    """silu(gate) * up for rows (T, 2 * inter) holding gate then up -> (T, inter)."""
    lib = library()
    assert lib is not None and fuses_silu(gate_up) and gate_up.shape[1] == 2 * inter
    t = gate_up.shape[0]
    out = torch.empty((t, inter), dtype=gate_up.dtype)
    err = getattr(lib, _SILU[gate_up.dtype])(
        gate_up.data_ptr(),
        gate_up.stride(0),
        out.data_ptr(),
        inter,
        t,
        inter,
        torch.get_num_threads(),
    )
    _check(err, "SiLU")
    return out


def fuses_rope(qkv: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> bool:
    """Whether `rope_kv` serves this fused projection output and these pools
    (KV, num_blocks, block_size, hd), each head's slots contiguous."""
    if qkv.dtype not in _ROPE or k_cache.dtype != qkv.dtype or not _rows(qkv):
        return False
    bs, hd = k_cache.shape[2], k_cache.shape[3]
    slots_contiguous = k_cache.stride()[1:] == (bs * hd, hd, 1)
    return slots_contiguous and v_cache.stride() == k_cache.stride() and library() is not None


def rope_kv(
    qkv: torch.Tensor,
    heads: tuple[int, int, int],
    cos_sin: tuple[torch.Tensor, torch.Tensor],
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
) -> None:
    """Rotate q and k in place in qkv (T, (H + 2 KV) hd), `heads` = (H, KV, hd), by the
    rows' cos and signed sin (T, 1, hd) from `RotaryEmbedding.lookup`; write the rotated
    k and the v into the pools at `slots` (T,) int64 (see `fuses_rope`)."""
    lib = library()
    assert lib is not None and fuses_rope(qkv, k_cache, v_cache)
    h, kv, hd = heads
    cos, sin = cos_sin
    t = qkv.shape[0]
    assert qkv.shape[1] == (h + 2 * kv) * hd and cos.is_contiguous() and sin.is_contiguous()
    assert cos.shape == sin.shape == (t, 1, hd) and cos.dtype == sin.dtype == qkv.dtype
    assert slots.dtype == torch.int64 and slots.is_contiguous() and slots.shape == (t,)
    err = getattr(lib, _ROPE[qkv.dtype])(
        qkv.data_ptr(),
        qkv.stride(0),
        t,
        h,
        kv,
        hd,
        cos.data_ptr(),
        sin.data_ptr(),
        hd,
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        k_cache.stride(0),
        slots.data_ptr(),
        k_cache.shape[1] * k_cache.shape[2],
        torch.get_num_threads(),
    )
    _check(err, "rotary embedding")


def _check(err: int, what: str) -> None:
    if err == 2:
        raise IndexError(f"{what}: a slot lies outside the KV pool")
    if err:
        raise RuntimeError(f"{what} kernel failed ({err})")
