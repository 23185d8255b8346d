"""Random-weight models of named shapes (`--model shape:NAME`, `bench/engine.py --shape`):
written once, loaded by us and by transformers alike, with the shape they are named for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from promptcache.model.errors import ModelLoadError
from promptcache.model.loading.loader import LoadedModel, load_model
from promptcache.model.loading.shapes import SHAPES, VOCAB, hf_config, shape_model_dir
from promptcache.model.spec import spec_from_hf_config
from tests.helpers import TOL, hf_logits, random_tokens


def test_written_once_and_loaded_like_a_real_model(
    bundled: LoadedModel, tmp_path: Path, make_engine: Any
) -> None:
    from transformers import AutoModelForCausalLM

    folder = shape_model_dir("tiny", bundled.path, tmp_path, dtype=torch.float32)
    weights = folder / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert shape_model_dir("tiny", bundled.path, tmp_path, dtype=torch.float32) == folder
    assert weights.stat().st_mtime_ns == written  # not written again
    assert (folder / "tokenizer.json").read_bytes() == (
        bundled.path / "tokenizer.json"
    ).read_bytes()

    model = load_model(str(folder), dtype=torch.float32)
    assert model.spec.vocab_size == VOCAB and model.spec.num_layers == 2
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = random_tokens(40, seed=1)
    ours = make_engine(model, kv_cache_bytes=1 << 20).prompt_logits(ids)
    assert (ours - hf_logits(hf, ids)).abs().max().item() <= TOL


def test_shape_prefix_and_unknown_shape(bundled: LoadedModel, tmp_path: Path) -> None:
    model = load_model("shape:tiny", dtype=torch.float32)
    assert model.spec.hidden_size == SHAPES["tiny"]["hidden_size"]
    assert model.path.parent.name == "shapes"
    with pytest.raises(ModelLoadError, match="unknown shape 'llama-70b'"):
        shape_model_dir("llama-70b", bundled.path, tmp_path)


def test_llama_1b_is_llama_3_2_1b_but_for_the_vocabulary() -> None:
    from transformers import AutoModelForCausalLM

    cfg = hf_config("llama-1b")
    spec = spec_from_hf_config(cfg)
    assert (spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim) == (16, 32, 8, 64)
    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    # Llama-3.2-1B has 1,235,814,400 parameters with its 128,256-token embedding (tied)
    assert params == 1_235_814_400 - (128_256 - VOCAB) * 2048
