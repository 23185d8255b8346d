"""The content fingerprint of a model folder: SHA-256 over its weights, config and tokenizer.

Two folders holding the same files give the same fingerprint wherever they live; any
changed weight, config value or tokenizer file gives another. Each file's digest is
remembered in `.promptcache-fingerprint.json` beside it and reused while the file's size
and modification time are unchanged, so only the first load reads the weights through.
A folder we cannot write to is simply hashed again at each load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DIGESTS_FILE = ".promptcache-fingerprint.json"
_VERSION = 1
_CHUNK = 1 << 22
# Files that decide which tokens a text becomes (the KV of equal tokens is what we cache).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)
# config.json keys that record who wrote the file, not what the model computes.
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path")


def model_fingerprint(folder: Path) -> str:
    """Hex SHA-256 naming the model's content (weights, config and tokenizer files)."""
    files = _content_files(folder)
    digests = _FileDigests(folder)
    h = hashlib.sha256(b"promptcache-model/1")
    h.update(_canonical_config(folder / "config.json"))
    for name in files:
        h.update(f"\0{name}\0{digests.get(name)}".encode())
    digests.save()
    return h.hexdigest()


def _content_files(folder: Path) -> list[str]:
    weights = sorted(p.name for p in folder.glob("*.safetensors"))
    tokenizer = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    return weights + tokenizer


def _canonical_config(path: Path) -> bytes:
    config = json.loads(path.read_text())
    for key in _VOLATILE_CONFIG_KEYS:
        config.pop(key, None)
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class _FileDigests:
    """Per-file digests, remembered beside the files and revalidated by size and mtime."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.known = self._load()
        self.changed = False

    def get(self, name: str) -> str:
        st = (self.folder / name).stat()
        entry = self.known.get(name)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return str(entry["sha256"])
        digest = _sha256_file(self.folder / name)
        self.known[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        self.changed = True
        return digest

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((self.folder / DIGESTS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def save(self) -> None:
        if not self.changed:
            return
        body = json.dumps({"version": _VERSION, "files": self.known}, indent=1, sort_keys=True)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".fingerprint-", dir=self.folder)
            with os.fdopen(fd, "w") as f:
                f.write(body)
            os.replace(tmp, self.folder / DIGESTS_FILE)
        except OSError as exc:  # a read-only folder: hash again next time
            log.debug("cannot remember digests in %s: %s", self.folder, exc)
