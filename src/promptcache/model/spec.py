"""Architecture description of a Llama-family decoder, read from a Hugging Face config.

Knows nothing about weights or tensors beyond the RoPE frequencies; the forward pass
(`llama.py`) is built from a `ModelSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from promptcache.model.errors import ModelLoadError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "proportional")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Shapes and options of one Llama-family decoder."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool
    sliding_window: int | None
    eos_token_ids: tuple[int, ...]

    @property
    def kv_bytes_per_token(self) -> int:
        """Elements of K and V per token over all layers (multiply by the dtype's size)."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim


def spec_from_hf_config(cfg: Any) -> ModelSpec:
    """Build a `ModelSpec` from a transformers `PretrainedConfig`; refuse what we can't run."""
    model_type = getattr(cfg, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"unsupported architecture {model_type!r}: promptcache runs Llama-family decoders "
            f"({', '.join(SUPPORTED_MODEL_TYPES)}); pass --model with one of those"
        )
    _check_hidden_act(cfg)
    heads = int(cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    # Llama and Qwen3 put `attention_bias` on q/k/v/o; Qwen2 always biases q/k/v only.
    attn_bias = bool(getattr(cfg, "attention_bias", False)) and model_type in ("llama", "qwen3")
    return ModelSpec(
        model_type=model_type,
        vocab_size=int(cfg.vocab_size),
        hidden_size=int(cfg.hidden_size),
        intermediate_size=int(cfg.intermediate_size),
        num_layers=int(cfg.num_hidden_layers),
        num_heads=heads,
        num_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
        head_dim=int(head_dim),
        rms_norm_eps=float(cfg.rms_norm_eps),
        max_position_embeddings=int(cfg.max_position_embeddings),
        tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        qkv_bias=attn_bias or model_type == "qwen2",
        o_bias=attn_bias,
        mlp_bias=bool(getattr(cfg, "mlp_bias", False)) and model_type == "llama",
        qk_norm=model_type == "qwen3",
        sliding_window=_sliding_window(cfg, model_type),
        eos_token_ids=_eos_ids(getattr(cfg, "eos_token_id", None)),
    )


def rope_inv_freq(cfg: Any) -> tuple[torch.Tensor, float]:
    """Inverse RoPE frequencies and the cos/sin scale, computed as transformers does."""
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = _rope_parameters(cfg)
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in STATIC_ROPE_TYPES:
        raise ModelLoadError(
            f"unsupported RoPE scaling {rope_type!r}; supported: {', '.join(STATIC_ROPE_TYPES)}"
        )
    if rope_type == "default":
        heads = cfg.num_attention_heads
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        base = float(params["rope_theta"])
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        return inv_freq, 1.0
    inv_freq, scale = ROPE_INIT_FUNCTIONS[rope_type](cfg, torch.device("cpu"))
    return inv_freq.float(), float(scale)


def _rope_parameters(cfg: Any) -> dict[str, Any]:
    # transformers >= 5 folds rope_theta and rope_scaling into `rope_parameters`.
    params = getattr(cfg, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return dict(params)
    scaling = dict(getattr(cfg, "rope_scaling", None) or {})
    scaling.setdefault("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    return scaling


def _check_hidden_act(cfg: Any) -> None:
    act = getattr(cfg, "hidden_act", "silu")
    if act != "silu":
        raise ModelLoadError(f"unsupported activation {act!r}: the MLP must be SwiGLU (silu)")


def _sliding_window(cfg: Any, model_type: str) -> int | None:
    window = getattr(cfg, "sliding_window", None)
    if model_type == "mistral" and window:
        return int(window)
    if model_type in ("qwen2", "qwen3") and getattr(cfg, "use_sliding_window", False):
        raise ModelLoadError("Qwen sliding-window attention (use_sliding_window) is not supported")
    return None


def _eos_ids(value: int | list[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)
