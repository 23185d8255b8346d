"""Resolve a model reference (bundled default, GGUF file, HF folder) and load it for serving.

Returns our own forward module with weights on the chosen device and dtype, the model's
architecture spec, and its tokenizer (which carries the chat template).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from promptcache.model.device import WEIGHTS, can_pack
from promptcache.model.errors import ModelLoadError
from promptcache.model.kernels import q8_matmul
from promptcache.model.layers.int4_linear import dense_from_rows, int4_kernel, int4_supported
from promptcache.model.layers.rotary import RotaryEmbedding
from promptcache.model.llama import LlamaForCausalLM
from promptcache.model.loading.bundled import bundled_gguf_path
from promptcache.model.loading.fingerprint import model_fingerprint
from promptcache.model.loading.gguf_convert import ensure_converted
from promptcache.model.loading.gguf_q4 import read_q4
from promptcache.model.loading.gguf_q8 import read_q8_head
from promptcache.model.loading.shapes import shape_model_dir
from promptcache.model.loading.weights import read_checkpoint, to_our_names
from promptcache.model.paths import default_cache_dir
from promptcache.model.spec import ModelSpec, rope_inv_freq, spec_from_hf_config

log = logging.getLogger(__name__)

SHAPE_PREFIX = "shape:"  # `--model shape:llama-1b`: random weights of that shape
# A folder with the tokenizer files a shape's model takes; default: the bundled model's.
SHAPE_TOKENIZER_ENV = "PROMPTCACHE_SHAPE_TOKENIZER"


@dataclass(slots=True)
class LoadedModel:
    """A model ready to run: our module, its spec, its tokenizer, where it came from, and
    the content fingerprint of its folder (see `promptcache.model.loading.fingerprint`; with 4-bit
    weights, marked so: their KV differs from the dense weights'), and which weights serve."""

    module: LlamaForCausalLM
    spec: ModelSpec
    tokenizer: Any
    path: Path
    device: torch.device
    dtype: torch.dtype
    fingerprint: str
    weights: str = "dense"


def resolve_model_path(model: str | None, cache_dir: Path | None = None) -> Path:
    """A safetensors model folder for `model` (None = bundled), converting GGUF once;
    `shape:NAME` is a random-weight model of that shape (`promptcache.model.loading.shapes`),
    written once with the bundled model's tokenizer."""
    cache = cache_dir or default_cache_dir()
    if model is None:
        return ensure_converted(bundled_gguf_path(), cache)
    if model.startswith(SHAPE_PREFIX):
        tokenizer = os.environ.get(SHAPE_TOKENIZER_ENV)
        tokenizer_dir = (
            Path(tokenizer) if tokenizer else ensure_converted(bundled_gguf_path(), cache)
        )
        return shape_model_dir(model.removeprefix(SHAPE_PREFIX), tokenizer_dir, cache)
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ensure_converted(path, cache)
    if path.is_dir():
        if (path / "config.json").exists():
            return path
        raise ModelLoadError(f"{path} has no config.json: pass a Hugging Face model folder")
    raise ModelLoadError(
        f"model {model!r} not found: pass a Hugging Face folder (config.json + safetensors) "
        "or a .gguf file; nothing is downloaded from a model hub"
    )


def load_model(
    model: str | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    cache_dir: Path | None = None,
    weights: str = "dense",
) -> LoadedModel:
    """Load `model` (see `resolve_model_path`) onto `device` in `dtype`; `weights="q4"`
    serves a GGUF's 4-bit projections as they are stored (see `model.layers.int4_linear`), or
    falls back to dense weights, with a warning, where they cannot be served fast."""
    from transformers import AutoConfig, AutoTokenizer

    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    device = device or torch.device("cpu")
    gguf = _gguf_source(model) if weights == "q4" else None
    path = resolve_model_path(model, cache_dir)
    try:
        hf_config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {path / 'config.json'}: {exc}") from exc
    spec = spec_from_hf_config(hf_config)
    module = build_module(hf_config, spec, path, device, dtype)
    fingerprint = model_fingerprint(path)
    if gguf is not None and _use_int4(module, gguf, spec, device, dtype):
        weights, fingerprint = "q4", f"{fingerprint}+q4"
    else:
        weights = "dense"
    tokenizer = AutoTokenizer.from_pretrained(path)
    return LoadedModel(module, spec, tokenizer, path, device, dtype, fingerprint, weights)


def _gguf_source(model: str | None) -> Path:
    """The GGUF file whose 4-bit blocks `--weights q4` serves."""
    if model is None:
        return bundled_gguf_path()
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path
    raise ModelLoadError(f"--weights q4 needs a .gguf model (its 4-bit blocks); {model} is not")


def _use_int4(
    module: LlamaForCausalLM, gguf: Path, spec: ModelSpec, device: torch.device, dtype: torch.dtype
) -> bool:
    """Swap the projections for 4-bit ones; False (and a warning) where that cannot be fast."""
    why = int4_supported(device, dtype)
    if why is None:
        try:
            module.use_int4(read_q4(gguf, spec.num_heads, spec.num_kv_heads), dtype)
        except ModelLoadError as exc:
            why = str(exc)
        else:
            _use_q8_head(module, gguf, spec)
            module.use_layer_ops(transformers_bits=False)  # 4-bit logits are not theirs
            return True
    log.warning("serving dense %s weights instead of 4-bit: %s", str(dtype)[6:], why)
    return False


def _use_q8_head(module: LlamaForCausalLM, gguf: Path, spec: ModelSpec) -> None:
    """Serve the LM head from the GGUF's 8-bit codes where they are Q8_0 and our kernel
    builds; else (logged) it stays dense."""
    if q8_matmul.library() is None:
        return
    try:
        module.use_q8_head(read_q8_head(gguf, spec.tie_word_embeddings))
    except ModelLoadError as exc:
        log.info("LM head stays dense: %s", exc)


def describe_linears(dtype: torch.dtype, weights: str) -> str:
    """Which kernels multiply by the weights on this CPU, in words (for logs and benches)."""
    linears = "oneDNN prepacked" if can_pack(torch.device("cpu"), dtype) else "F.linear"
    if weights == "q4":
        rows = dense_from_rows(dtype)
        linears = f"4-bit by {int4_kernel(dtype)} below {rows} rows, else {linears}"
        if q8_matmul.library() is not None:
            path = ", ".join(q8_matmul.paths()) or "compiler-vectorized"
            head = f"8-bit by promptcache C ({path}) below {q8_matmul.dense_from_rows()} rows"
            linears += f"; LM head (if Q8_0) {head}"
    return linears


def build_module(
    hf_config: Any, spec: ModelSpec, path: Path, device: torch.device, dtype: torch.dtype
) -> LlamaForCausalLM:
    """Instantiate our forward and fill it with the checkpoint's weights."""
    inv_freq, scale = rope_inv_freq(hf_config)
    rope = RotaryEmbedding(inv_freq, scale, spec.max_position_embeddings)
    with torch.device("meta"):
        module = LlamaForCausalLM(spec, rope)  # no memory is spent on random init
    state = to_our_names(read_checkpoint(path), spec.tie_word_embeddings)
    state = {k: v.to(dtype) for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    try:
        result = module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"weights in {path} do not fit its config: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ModelLoadError(
            f"weights in {path} do not match its config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    module = module.to(device).eval()
    if can_pack(device, dtype):
        module.pack_for_cpu()
    module.use_layer_ops()
    return module
