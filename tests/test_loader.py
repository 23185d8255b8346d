"""Model resolution and load errors say what is wrong and what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from promptcache.model.errors import ModelLoadError
from promptcache.model.loading.gguf_convert import ensure_converted
from promptcache.model.loading.loader import load_model, resolve_model_path


def test_missing_path() -> None:
    with pytest.raises(ModelLoadError, match=r"not found.*nothing is downloaded"):
        resolve_model_path("/nonexistent/model")


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_model_path(str(tmp_path))


def test_unsupported_architecture(tmp_path: Path, tiny_llama_dir: Path) -> None:
    shutil.copytree(tiny_llama_dir, tmp_path / "m")
    cfg = json.loads((tmp_path / "m/config.json").read_text())
    cfg.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (tmp_path / "m/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unsupported architecture 'gpt2'"):
        load_model(str(tmp_path / "m"))


def test_corrupt_weights(tmp_path: Path, tiny_llama_dir: Path) -> None:
    shutil.copytree(tiny_llama_dir, tmp_path / "m")
    (tmp_path / "m/model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="missing or corrupt"):
        load_model(str(tmp_path / "m"))


def test_weights_that_do_not_fit(tmp_path: Path, tiny_llama_dir: Path) -> None:
    shutil.copytree(tiny_llama_dir, tmp_path / "m")
    cfg = json.loads((tmp_path / "m/config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "m/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="do not match its config"):
        load_model(str(tmp_path / "m"))


def test_corrupt_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 100)
    with pytest.raises(ModelLoadError, match="cannot read GGUF file"):
        ensure_converted(bad, tmp_path / "cache")
    assert list((tmp_path / "cache/models").iterdir()) == []  # nothing half-written


def test_bundled_model_converts_once(bundled: object) -> None:
    folder = resolve_model_path(None)
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    model = load_model(None, dtype=torch.bfloat16)
    assert model.spec.num_layers == 30 and model.spec.num_kv_heads == 3
    assert model.module.embed_tokens.weight.dtype == torch.bfloat16
