"""Small arithmetic helpers shared by every layer (imports nothing from the package)."""

from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for non-negative a and positive b (e.g. blocks needed for a tokens)."""
    return -(-a // b)
