"""Read a Hugging Face safetensors checkpoint into our module, fusing q/k/v and gate/up.

Knows the Hugging Face parameter names; the forward pass does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from promptcache.model.errors import ModelLoadError

_FUSED = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
}


def read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint, by Hugging Face name."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [p.name for p in sorted(folder.glob("*.safetensors"))]
    if not files:
        raise ModelLoadError(f"no *.safetensors weights in {folder}; is it a model folder?")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            tensors.update(load_file(folder / name))
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(
                f"cannot read weights file {folder / name}: {exc}; the file is missing or "
                "corrupt, re-download or re-convert the model"
            ) from exc
    return tensors


def to_our_names(hf: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """Rename Hugging Face tensors to our module's names and fuse the split projections."""
    flat = {_strip(name): t for name, t in hf.items()}
    if tied:
        flat.pop("lm_head.weight", None)
    out: dict[str, torch.Tensor] = {}
    fused_parts = {part for parts in _FUSED.values() for part in parts}
    for name, tensor in flat.items():
        if name.startswith("layers.") and _layer_module(name) in fused_parts:
            continue
        out[name] = tensor
    for layer_prefix in sorted({_layer_prefix(n) for n in flat if n.startswith("layers.")}):
        for fused, parts in _FUSED.items():
            for kind in ("weight", "bias"):
                pieces = [flat.get(f"{layer_prefix}.{p}.{kind}") for p in parts]
                if all(p is not None for p in pieces):
                    out[f"{layer_prefix}.{fused}.{kind}"] = torch.cat(pieces, dim=0)  # type: ignore[arg-type]
    return out


def _strip(name: str) -> str:
    return name.removeprefix("model.")


def _layer_prefix(name: str) -> str:
    return ".".join(name.split(".")[:2])  # "layers.7"


def _layer_module(name: str) -> str:
    return ".".join(name.split(".")[2:-1])  # "self_attn.q_proj"
