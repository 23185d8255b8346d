"""The CPU and its facts, and the torch device and dtype from user strings (`--device`,
`--dtype`, `--weights`)."""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)
WEIGHTS = ("dense", "q4")  # `--weights`: dequantized to the dtype, or a GGUF's 4-bit blocks


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' -> bfloat16 on CUDA with bf16 and on CPUs with AMX/AVX512-BF16, else float32."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_CHOICES)}")
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def cpu_model() -> str:
    """The CPU's model name and its bfloat16-relevant ISA flags, for benchmark reports."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        "unknown CPU",
    )
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in info]
    return f"{name} ({', '.join(flags) or 'no AVX2'})"


def cpu_identity() -> str:
    """The CPU's model name and every ISA flag it reports: what `-march=native` compiles
    for (keys the C kernel's build, model/kernels/decode_attention.py)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return cpu_model()
    lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(dict.fromkeys(lines))


def cpu_has_fast_bf16() -> bool:
    """True when the CPU advertises AMX-BF16 or AVX512-BF16."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    """True on a CPU with oneDNN, for float32 weights, and for bfloat16 ones where its
    bfloat16 support is native."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return False
    mkldnn = torch.ops.mkldnn
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        return dtype == torch.float32 or bool(mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
