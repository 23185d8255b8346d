"""Resolve a model reference (bundled default, GGUF file, HF folder) and load it for serving.

Returns our own forward module with weights on the chosen device and dtype, the model's
architecture spec, and its tokenizer (which carries the chat template).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from promptcache.model.device import WEIGHTS, can_pack
from promptcache.model.errors import ModelLoadError
from promptcache.model.kernels import q8_matmul
from promptcache.model.layers.int4_linear import dense_from_rows, int4_kernel, int4_supported
from promptcache.model.layers.kernel_set import choose_kernels
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
from promptcache.model.quant import Q4Tensor, Q8Tensor
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
    fingerprint = model_fingerprint(path)
    module = build_module(hf_config, spec, path, device, dtype, gguf)
    if module.kernels.int4:
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


def _int4_weights(
    gguf: Path | None, spec: ModelSpec, device: torch.device, dtype: torch.dtype
) -> dict[str, Q4Tensor] | None:
    """The GGUF's 4-bit projections where they can be served fast here, else None (and a
    warning saying why: the model is served with dense weights)."""
    if gguf is None:
        return None
    why = int4_supported(device, dtype)
    if why is None:
        try:
            return read_q4(gguf, spec.num_heads, spec.num_kv_heads)
        except ModelLoadError as exc:
            why = str(exc)
    _dense_instead(dtype, why)
    return None


def _dense_instead(dtype: torch.dtype, why: str) -> None:
    log.warning("serving dense %s weights instead of 4-bit: %s", str(dtype)[6:], why)


def _q8_head(gguf: Path, spec: ModelSpec) -> Q8Tensor | None:
    """The LM head's 8-bit codes where they are Q8_0 and fit the model; else None (logged:
    the head stays dense)."""
    try:
        q = read_q8_head(gguf, spec.tie_word_embeddings)
    except ModelLoadError as exc:
        log.info("LM head stays dense: %s", exc)
        return None
    if q.shape != (spec.vocab_size, spec.hidden_size):
        log.info("LM head stays dense: its 8-bit weight %s does not fit the model", q.shape)
        return None
    return q


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
    hf_config: Any,
    spec: ModelSpec,
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    gguf: Path | None = None,
) -> LlamaForCausalLM:
    """Our network with the checkpoint's weights, built with the kernels chosen for this
    device and dtype (`choose_kernels`), with `gguf`'s 4-bit projections (and its 8-bit LM
    head) where they can be served, else dense."""
    inv_freq, scale = rope_inv_freq(hf_config)
    rope = RotaryEmbedding(inv_freq, scale, spec.max_position_embeddings)
    state = to_our_names(read_checkpoint(path), spec.tie_word_embeddings)
    state = {k: v.to(dtype) for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
    q4 = _int4_weights(gguf, spec, device, dtype)
    if gguf is not None and q4 is not None:
        kernels = choose_kernels(device, dtype, spec, int4=True)
        q8 = _q8_head(gguf, spec) if kernels.q8_head else None
        kernels = replace(kernels, q8_head=q8 is not None)
        try:
            return LlamaForCausalLM.build(spec, rope, kernels, state, device, q4, q8)
        except ModelLoadError as exc:  # a 4-bit weight that does not fit: checked first
            _dense_instead(dtype, str(exc))
    kernels = choose_kernels(device, dtype, spec)
    try:
        return LlamaForCausalLM.build(spec, rope, kernels, state, device)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc
