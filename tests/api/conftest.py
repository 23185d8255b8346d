"""Fixtures for the API tests: a real `promptcache serve` on a free port (bundled model,
float32) shared by the package, and the in-process server (uvicorn in a thread) in several
set-ups. The helpers behind them are in helpers.py and inprocess.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promptcache.api.auth import KeyRing
from promptcache.config import EngineConfig
from promptcache.model.loading.loader import LoadedModel
from tests.api.helpers import Server, start_server, stop_server
from tests.api.inprocess import SMALL_LIMITS, TENANT_KEYS, FakeClock, Running, serve_in_process


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("server"))
    yield s
    stop_server(s)


@pytest.fixture
def running(bundled: LoadedModel, tmp_path: Path) -> Iterator[Running]:
    yield from serve_in_process(bundled, tmp_path, EngineConfig(kv_cache_bytes=64 << 20))


@pytest.fixture
def running_exact(bundled: LoadedModel, tmp_path: Path) -> Iterator[Running]:
    yield from serve_in_process(
        bundled, tmp_path, EngineConfig(kv_cache_bytes=64 << 20, usage_rules="exact")
    )


@pytest.fixture
def running_keys(bundled: LoadedModel, tmp_path: Path) -> Iterator[Running]:
    keys = KeyRing(TENANT_KEYS, admin_key="sk-admin")
    yield from serve_in_process(bundled, tmp_path, EngineConfig(kv_cache_bytes=64 << 20), keys)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def running_clock(bundled: LoadedModel, tmp_path: Path, clock: FakeClock) -> Iterator[Running]:
    """The in-process server on a fake clock (retention times move only when told)."""
    yield from serve_in_process(
        bundled, tmp_path, EngineConfig(kv_cache_bytes=64 << 20), clock=clock
    )


@pytest.fixture
def running_limits(bundled: LoadedModel, tmp_path: Path) -> Iterator[Running]:
    """The in-process server with small limits (1 MiB bodies, 8 KiB headers, 100 messages,
    2 s to send a body)."""
    config = EngineConfig(kv_cache_bytes=64 << 20)
    yield from serve_in_process(bundled, tmp_path, config, limits=SMALL_LIMITS)
