"""Prepacked oneDNN linears (bfloat16 on CPU) give bit-identical logits to F.linear."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import promptcache.model.loader as loader
from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.model.cpu_linear import PackedLinear, can_pack
from tests.conftest import save_tiny_model

pytestmark = pytest.mark.skipif(
    not can_pack(torch.device("cpu"), torch.bfloat16), reason="no oneDNN bfloat16 on this CPU"
)


def test_packed_linear_equals_f_linear() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 64, generator=g).bfloat16()
    w = torch.randn(96, 64, generator=g).bfloat16()
    b = torch.randn(96, generator=g).bfloat16()
    torch.testing.assert_close(PackedLinear(w, b)(x), F.linear(x, w, b), rtol=0, atol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_packed_model_logits_are_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tied: bool
) -> None:
    save_tiny_model(tmp_path, "llama", tie_word_embeddings=tied)
    packed = loader.load_model(str(tmp_path), dtype=torch.bfloat16)
    assert isinstance(packed.module.lm_head, PackedLinear)
    monkeypatch.setattr(loader, "can_pack", lambda *_: False)
    plain = loader.load_model(str(tmp_path), dtype=torch.bfloat16)
    assert not isinstance(plain.module.lm_head, PackedLinear)
    ids = list(range(3, 40))

    def logits(model: Any) -> torch.Tensor:
        return LLMEngine(model, EngineConfig(kv_cache_bytes=1 << 22)).prompt_logits(ids, 16)

    torch.testing.assert_close(logits(packed), logits(plain), rtol=0, atol=0)
