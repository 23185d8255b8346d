"""Small helpers and constants shared by every layer (imports nothing from the package)."""

from __future__ import annotations

# `EngineConfig.attention_backend`'s values (model/attention/selector.py says what each means).
ATTENTION_BACKENDS = ("auto", "torch", "triton")


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for non-negative a and positive b (e.g. blocks needed for a tokens)."""
    return -(-a // b)
