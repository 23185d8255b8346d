"""Random-weight models of well-known shapes, for benchmarks without downloading weights.

`shape_model_dir("llama-1b")` writes (once) a Hugging Face folder with that architecture's
config, random weights drawn by transformers' own initializer (seeded), and the bundled
model's tokenizer, and returns it; any loader (ours, transformers) reads it as a real
model. The vocabulary is the bundled tokenizer's 49,152 tokens, so every sampled id
decodes; the rest of each shape is the named model's own. Kernels and memory traffic
are those of the real model; its outputs are noise.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from promptcache.model.errors import ModelLoadError

VOCAB = 49_152  # the bundled tokenizer's vocabulary
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

SHAPES: dict[str, dict[str, Any]] = {
    # SmolLM2-135M, the bundled model's own shape
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
    ),
    # Llama-3.2-1B
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling=_LLAMA3_ROPE,
        tie_word_embeddings=True,
    ),
    # Llama-3.2-3B
    "llama-3b": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling=_LLAMA3_ROPE,
        tie_word_embeddings=True,
    ),
    # Llama-3.1-8B
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling={**_LLAMA3_ROPE, "factor": 8.0},
        tie_word_embeddings=False,
    ),
    # a few MB: for tests and dry runs of the benchmarks
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    ),
}


def shape_model_dir(
    name: str,
    tokenizer_dir: Path,
    cache_dir: Path,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
) -> Path:
    """The folder of a random-weight model of shape `name` (see `SHAPES`) with the
    tokenizer files of `tokenizer_dir`, written under `cache_dir/shapes` on first use."""
    if name not in SHAPES:
        raise ModelLoadError(f"unknown shape {name!r}; choose one of {', '.join(SHAPES)}")
    config = hf_config(name)
    facts = {"config": config.to_dict(), "dtype": str(dtype), "seed": seed}
    key = hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()
    folder = cache_dir / "shapes" / f"{name}-{key[:12]}"
    if (folder / "complete").exists():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _write(config, tmp, dtype, seed)
    for f in _TOKENIZER_FILES:
        if (tokenizer_dir / f).exists():
            shutil.copy(tokenizer_dir / f, tmp / f)
    (tmp / "complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def hf_config(name: str) -> Any:
    """The transformers `LlamaConfig` of shape `name`."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, **SHAPES[name])


def _write(config: Any, folder: Path, dtype: torch.dtype, seed: int) -> None:
    """transformers' own random init (seeded), on the GPU where there is one, saved in
    `dtype` as safetensors."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(folder, safe_serialization=True)
