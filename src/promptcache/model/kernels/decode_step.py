"""The binding of `csrc/decode_step.c`: a 4-bit model's decode layers in one C call, over
the same kernels (by their function pointers) as the module-by-module forward. The structs
mirror `csrc/kernels.h`; the step executor that fills them is the runner's
(`engine.cpu_step`)."""

from __future__ import annotations

import ctypes
import functools

from promptcache.model.kernels import build
from promptcache.model.kernels.build import Signature

_p, _i32, _i64, _f32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float


class Kernels(ctypes.Structure):
    _fields_ = [("q4", _p), ("norm", _p), ("silu", _p), ("rope", _p), ("attn", _p)]


class Q4Weight(ctypes.Structure):
    _fields_ = [("codes", _p), ("scale", _p), ("low", _p), ("n", _i32), ("k", _i32)]


class Layer(ctypes.Structure):
    _fields_ = [
        ("in_norm", _p),
        ("post_norm", _p),
        ("qkv", Q4Weight),
        ("o", Q4Weight),
        ("gate_up", Q4Weight),
        ("down", Q4Weight),
        ("k_pool", _p),
        ("v_pool", _p),
    ]


class Dims(ctypes.Structure):
    _fields_ = [
        ("hidden", _i32),
        ("heads", _i32),
        ("kv_heads", _i32),
        ("head_dim", _i32),
        ("inter", _i32),
        ("block_size", _i32),
        ("dtype", _i32),
        ("pool_head_stride", _i64),
        ("pool_block_stride", _i64),
        ("pool_slots", _i64),
        ("eps", _f32),
        ("scale", _f32),
    ]


BUFFERS = ("x", "h", "normed", "qkv", "att", "gate_up", "act", "out")


class Buffers(ctypes.Structure):
    _fields_ = [(name, _p) for name in BUFFERS]


SIGNATURES: dict[str, Signature] = {
    "pc_decode_layers": ([_p, _p, _i32, _p, _p, _i32, _p, _p, _p, _p, _p, _i64, _p, _i32], _i32)
}
STRUCTS = (Kernels, Q4Weight, Layer, Dims, Buffers)  # as csrc/kernels.h declares them


@functools.cache
def library() -> ctypes.CDLL | None:
    """The built step, or None (logged) where it cannot be built or loaded."""
    return build.library("decode_step", SIGNATURES)


def address(lib: ctypes.CDLL | None, name: str) -> int:
    assert lib is not None
    address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    assert address is not None
    return address
