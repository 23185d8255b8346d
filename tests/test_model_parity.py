"""Our forward must give transformers' logits on the same weights (float32, ≤ 1e-4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from promptcache.model.loading.loader import LoadedModel, load_model
from tests.helpers import TOL, hf_logits, save_tiny_model

CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "llama-bias": ("llama", {"attention_bias": True, "mlp_bias": True}),
    "llama-untied": ("llama", {"tie_word_embeddings": False}),
    "llama3-rope": (
        "llama",
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            "rope_theta": 500000.0,
        },
    ),
    "mistral": ("mistral", {"sliding_window": None}),
    "mistral-window": ("mistral", {"sliding_window": 24}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk", [None, 7])
def test_tiny_logits_match_transformers(
    case: str, chunk: int | None, tmp_path: Path, make_engine: Any
) -> None:
    arch, overrides = CASES[case]
    hf = save_tiny_model(tmp_path, arch, seed=1, **overrides)
    model = load_model(str(tmp_path), dtype=torch.float32)
    engine = make_engine(model, block_size=4, kv_cache_bytes=1 << 20)
    ids = torch.randint(0, 256, (61,), generator=torch.Generator().manual_seed(2)).tolist()
    ours = engine.prompt_logits(ids, chunk_size=chunk)
    assert ours.shape == (61, 256)
    diff = (ours - hf_logits(hf, ids)).abs().max().item()
    assert diff <= TOL


def test_bundled_logits_match_transformers(bundled: LoadedModel, make_engine: Any) -> None:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(bundled.path, dtype=torch.float32).eval()
    text = "Prompt caching keeps the KV cache of a repeated prefix. " * 12
    ids = bundled.tokenizer.encode(text, add_special_tokens=False)
    engine = make_engine(bundled, kv_cache_bytes=64 << 20)
    ref = hf_logits(hf, ids)
    for chunk in (None, 50):
        ours = engine.prompt_logits(ids, chunk_size=chunk)
        assert (ours - ref).abs().max().item() <= TOL
    assert ours[-1].argmax().item() == ref[-1].argmax().item()
