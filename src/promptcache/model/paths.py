"""Where promptcache keeps what it builds or converts once: the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_DIR_ENV = "PROMPTCACHE_CACHE_DIR"


def default_cache_dir() -> Path:
    """$PROMPTCACHE_CACHE_DIR, else the user's cache folder (~/.cache/promptcache on Linux)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path(platformdirs.user_cache_dir("promptcache"))
