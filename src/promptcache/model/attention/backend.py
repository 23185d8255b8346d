"""The one interface of an attention backend: a builder that turns a step's layout into
the step's input tensors and the backend's own metadata.

The runner describes a step without knowing any backend: which sequences decode and
which prefill a chunk, their block tables, how many of their tokens are in the pool
already, and the flat batch's token ids and positions (decode rows first). The backend
chosen at start (`model.attention.selector.select_backend`) builds the rest; the layers
hand its metadata to `model.attention.paged.attend`, which runs that backend's paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from promptcache.model.attention.metadata import AttentionMetadata


@dataclass(slots=True)
class SeqChunk:
    """One sequence's part of a step."""

    key: int  # tells the step's sequences apart (the runner uses id(seq))
    block_table: list[int]
    start: int  # tokens of the sequence already in the pool
    num_tokens: int  # tokens it computes this step (1 for a decode)

    @property
    def context_len(self) -> int:
        """Keys the chunk's last token attends to, this step's included."""
        return self.start + self.num_tokens


@dataclass(slots=True)
class StepLayout:
    """A step's sequences and its flat batch (decode rows, then each prefill chunk)."""

    decodes: list[SeqChunk]
    prefills: list[SeqChunk]
    input_ids: list[int]
    positions: list[int]

    def slots(self, block_size: int) -> list[int]:
        """Each token's K/V slot in the pool (block id * block_size + offset)."""
        out: list[int] = []
        for c in self.decodes + self.prefills:
            table = c.block_table
            out.extend(
                table[p // block_size] * block_size + p % block_size
                for p in range(c.start, c.context_len)
            )
        return out


@dataclass(slots=True)
class StepTensors:
    """A step's inputs on the device: token ids, positions, and the backend's metadata."""

    input_ids: torch.Tensor  # (T,)
    positions: torch.Tensor  # (T,)
    meta: AttentionMetadata


class AttentionBackend(Protocol):
    """What the runner asks of the backend it was given."""

    @property
    def name(self) -> str:
        """ "torch", "cpu" (the C decode kernel) or "triton"."""

    def build(self, step: StepLayout) -> StepTensors:
        """The step's tensors and this backend's metadata."""
