"""Streaming text deltas (hold-back rules) and settings precedence (flag > env > file)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from promptcache.api.streaming import TextDeltas, sse
from promptcache.cli.settings import add_config_flags, build_config, parse_bytes
from promptcache.config import EngineConfig, ServerConfig


def test_deltas_hold_back_possible_stop_strings() -> None:
    d = TextDeltas(("STOP",))
    assert d.delta("Hello S", finished=False) == "Hello "  # "S" may start "STOP"
    assert d.delta("Hello ST", finished=False) == ""
    assert d.delta("Hello STa", finished=False) == "STa"  # no longer a stop prefix
    assert d.delta("Hello STa", finished=True) == ""


def test_deltas_hold_back_partial_characters_and_flush_at_end() -> None:
    d = TextDeltas(())
    assert d.delta("caf\ufffd", finished=False) == "caf"
    assert d.delta("café", finished=False) == "é"
    assert d.delta("café!\ufffd", finished=True) == "!\ufffd"


def test_sse_format() -> None:
    assert sse({"a": 1}) == 'data: {"a":1}\n\n'
    assert sse({"a": 1}, event="response.created") == ('event: response.created\ndata: {"a":1}\n\n')


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    add_config_flags(p, EngineConfig, "engine")
    add_config_flags(p, ServerConfig, "server")
    return p


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "promptcache.toml"
    cfg.write_text(
        '[engine]\nkv_cache_bytes = "1GiB"\nmax_num_seqs = 4\n'
        "[server]\nport = 9001\nmax_queue = 7\n"
    )
    monkeypatch.setenv("PROMPTCACHE_MAX_NUM_SEQS", "8")
    monkeypatch.setenv("PROMPTCACHE_ENABLE_PREFIX_CACHING", "false")
    args = _parser().parse_args(["--config", str(cfg), "--port", "9002"])
    engine = build_config(EngineConfig, args, "engine")
    server = build_config(ServerConfig, args, "server")
    assert engine.kv_cache_bytes == 1 << 30  # file
    assert engine.max_num_seqs == 8  # env beats file
    assert engine.enable_prefix_caching is False  # env
    assert engine.block_size == 16  # default
    assert server.port == 9002  # flag beats file
    assert server.max_queue == 7


def test_durability_settings_from_flags_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (EngineConfig().disk_fsync, EngineConfig().disk_fsync_interval_s) == ("batch", 5.0)
    assert (ServerConfig().ledger_synchronous, ServerConfig().responses_synchronous) == (
        "normal",
        "normal",
    )
    cfg = tmp_path / "promptcache.toml"
    cfg.write_text(
        '[engine]\ndisk_fsync_interval_s = 0.5\n[server]\nresponses_synchronous = "full"\n'
    )
    monkeypatch.setenv("PROMPTCACHE_LEDGER_SYNCHRONOUS", "full")
    args = _parser().parse_args(["--config", str(cfg), "--disk-fsync", "always"])
    engine = build_config(EngineConfig, args, "engine")
    server = build_config(ServerConfig, args, "server")
    assert (engine.disk_fsync, engine.disk_fsync_interval_s) == ("always", 0.5)
    assert (server.ledger_synchronous, server.responses_synchronous) == ("full", "full")
    with pytest.raises(ValueError, match="disk_fsync must be one of never, batch, always"):
        EngineConfig(disk_fsync="sometimes")
    with pytest.raises(ValueError, match="disk_fsync_interval_s must be positive"):
        EngineConfig(disk_fsync_interval_s=0)
    with pytest.raises(ValueError, match="ledger_synchronous must be one of normal, full"):
        ServerConfig(ledger_synchronous="off")


def test_settings_refuse_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[engine]\nblock_sise = 32\n")
    args = _parser().parse_args(["--config", str(cfg)])
    with pytest.raises(ValueError, match=r"unknown setting.*block_sise"):
        build_config(EngineConfig, args, "engine")
    with pytest.raises(ValueError, match="increment"):
        EngineConfig(block_size=48)
    assert parse_bytes("512MiB") == 512 << 20 and parse_bytes("2g") == 2 << 30
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bytes("lots")
