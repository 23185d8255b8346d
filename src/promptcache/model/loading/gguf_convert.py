"""Convert a GGUF file once into a dequantized safetensors folder (weights, config, tokenizer).

Writes into a temporary folder and renames it into place, so an interrupted conversion
never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

from promptcache.model.errors import ModelLoadError

log = logging.getLogger(__name__)


def converted_folder(gguf: Path, cache_dir: Path) -> Path:
    """Where the conversion of `gguf` lives: keyed by name, size and modification time."""
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return cache_dir / "models" / f"{gguf.stem}-{key[:12]}"


def ensure_converted(gguf: Path, cache_dir: Path) -> Path:
    """Return the safetensors folder for `gguf`, converting it first if needed."""
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    target = converted_folder(gguf, cache_dir)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert(gguf, tmp)
        tmp.rename(target)
    except FileExistsError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read GGUF file {gguf}: {exc}; check that it is a complete Llama-family "
            "GGUF (re-download it if it was truncated)"
        ) from exc
    # The GGUF quantizer blocks save_pretrained; the weights are already dequantized.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
