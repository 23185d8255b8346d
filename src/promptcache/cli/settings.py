"""Settings for the CLI: flags, then environment, then a TOML file, then the defaults.

Every field of `EngineConfig` and `ServerConfig` (the one place that owns each default) is
a flag (`--kv-cache-bytes`), an environment variable (`PROMPTCACHE_KV_CACHE_BYTES`) and a
key of the config file's `[engine]` or `[server]` table; the first of those that is set
wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from promptcache.config import EngineConfig, RouterConfig, ServerConfig

ENV_PREFIX = "PROMPTCACHE_"
CONFIG_ENV = "PROMPTCACHE_CONFIG"

_UNITS = {
    "": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}

C = TypeVar("C", EngineConfig, ServerConfig, RouterConfig)


def parse_bytes(text: str | int) -> int:
    """'2GiB', '512MiB', '1g', '1048576' -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a byte size: {text!r} (e.g. 2GiB, 512MiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _converter(f: dataclasses.Field[Any]) -> Any:
    if f.name.endswith("_bytes"):
        return parse_bytes
    kind = str(f.type)
    if kind == "bool":
        return parse_bool
    if kind.startswith("float"):
        return float
    return int if kind.startswith("int") else str


def add_config_flags(parser: argparse.ArgumentParser, cls: type[Any], title: str) -> None:
    """One `--flag` per field of `cls`; unset flags stay None so env/file/default apply."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f"default: {f.default}; env {ENV_PREFIX}{f.name.upper()}"
        if str(f.type) == "bool":
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_
            )
        else:
            group.add_argument(flag, dest=f.name, type=_converter(f), default=None, help=help_)


def add_config_file_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help=f"TOML file with [engine], [server] and [prices] tables; env {CONFIG_ENV}",
    )


def build_config(cls: type[C], args: argparse.Namespace, table: str) -> C:
    """`cls` from flags, then environment, then the config file, then defaults."""
    file_values = _config_file(getattr(args, "config", None)).get(table, {})
    unknown = set(file_values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown setting(s) in [{table}]: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        flag = getattr(args, f.name, None)
        env = os.environ.get(ENV_PREFIX + f.name.upper())
        if flag is not None:
            values[f.name] = flag
        elif env is not None:
            values[f.name] = _converter(f)(env)
        elif f.name in file_values:
            values[f.name] = _converter(f)(file_values[f.name])
    return cls(**values)


def price_tables(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's `[prices]` table: one `[prices."MODEL"]` table per model."""
    tables = _config_file(getattr(args, "config", None)).get("prices", {})
    if not isinstance(tables, dict):
        raise ValueError("[prices] in the config file must be a table")
    return tables


def _config_file(path: str | None) -> dict[str, Any]:
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        return tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read config file {path}: {exc}") from exc
