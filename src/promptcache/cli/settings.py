"""Command-line flags derived from `EngineConfig`, so every engine number has one default."""

from __future__ import annotations

import argparse
import dataclasses
import re

from promptcache.config import EngineConfig

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


def parse_bytes(text: str) -> int:
    """'2GiB', '512MiB', '1g', '1048576' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a byte size: {text!r} (e.g. 2GiB, 512MiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per EngineConfig field, defaulting to the field's default."""
    group = parser.add_argument_group("engine settings (see EngineConfig)")
    for f in dataclasses.fields(EngineConfig):
        flag = "--" + f.name.replace("_", "-")
        dest, help_ = f"engine_{f.name}", f"default: {f.default}"
        if f.type == "bool":
            action = argparse.BooleanOptionalAction
            group.add_argument(flag, dest=dest, action=action, default=f.default, help=help_)
        else:
            kind = parse_bytes if f.name.endswith("_bytes") else int
            group.add_argument(flag, dest=dest, type=kind, default=f.default, help=help_)


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    values = {f.name: getattr(args, f"engine_{f.name}") for f in dataclasses.fields(EngineConfig)}
    return EngineConfig(**values)
