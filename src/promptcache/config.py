"""Engine settings: the one place that owns every engine number and its default.

Other modules read these values; they never define their own copies.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Settings of the inference engine (KV pool and scheduler).

    Attributes:
        block_size: tokens per KV block (the paging unit). Default 16.
        kv_cache_bytes: byte budget of the KV block pool, all layers together. Default 2 GiB.
        max_num_seqs: most sequences running in one step. Default 16.
        max_num_batched_tokens: token budget of one step (prefill chunks + decodes). Default 1024.
        max_model_len: longest sequence (prompt + output) accepted; None means the model's
            context length (``max_position_embeddings``).
    """

    block_size: int = 16
    kv_cache_bytes: int = 2 * GIB
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 1024
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        for name in ("block_size", "kv_cache_bytes", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise ValueError(f"max_model_len must be positive, got {self.max_model_len}")
