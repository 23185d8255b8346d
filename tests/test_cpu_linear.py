"""Prepacked oneDNN linears on CPU: bit-identical logits to F.linear in bfloat16 (both
are oneDNN), within float32 rounding of MKL's in float32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import promptcache.model.layers.kernel_set as kernel_set
import promptcache.model.loading.loader as loader
from promptcache.config import EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.model.device import can_pack
from promptcache.model.layers.packed_linear import PackedLinear
from tests.helpers import save_tiny_model

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
    monkeypatch.setattr(kernel_set, "can_pack", lambda *_: False)
    plain = loader.load_model(str(tmp_path), dtype=torch.bfloat16)
    assert not isinstance(plain.module.lm_head, PackedLinear)
    ids = list(range(3, 40))

    def logits(model: Any) -> torch.Tensor:
        return LLMEngine(model, EngineConfig(kv_cache_bytes=1 << 22)).prompt_logits(ids, 16)

    torch.testing.assert_close(logits(packed), logits(plain), rtol=0, atol=0)


@pytest.mark.parametrize("rows", [1, 8, 300])
def test_packed_float32_linear_is_f_linear_within_float32_rounding(rows: int) -> None:
    g = torch.Generator().manual_seed(rows)
    x, w, b = (torch.randn(*s, generator=g) for s in ((rows, 576), (960, 576), (960,)))
    exact = x.double() @ w.double().t() + b.double()
    got = PackedLinear(w, b)(x)
    assert got.dtype == torch.float32
    assert (got.double() - exact).abs().max() <= 1e-6 * 576 * exact.abs().max()


@pytest.mark.slow
def test_packed_float32_model_logits_match_f_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    packed = loader.load_model(None, dtype=torch.float32)
    assert isinstance(packed.module.lm_head, PackedLinear)
    # the tied head reads the embeddings' weights (packed copy) and gives their product
    monkeypatch.setattr(kernel_set, "can_pack", lambda *_: False)
    plain = loader.load_model(None, dtype=torch.float32)
    ids = list(range(300, 400))

    def logits(model: Any) -> torch.Tensor:
        return LLMEngine(model, EngineConfig(kv_cache_bytes=1 << 24)).prompt_logits(ids, 8)

    assert (logits(packed) - logits(plain)).abs().max().item() <= 1e-4
