"""Process-level helpers of the engine: the build thread and the allocator settings."""

from __future__ import annotations

import platform
import threading

import pytest

from promptcache.engine.host_memory import tune_host_malloc
from promptcache.engine.openmp import run_on_temporary_thread


def test_temporary_thread_returns_result_and_exits() -> None:
    seen: list[threading.Thread] = []

    def build() -> int:
        seen.append(threading.current_thread())
        return 42

    assert run_on_temporary_thread(build) == 42
    assert seen[0] is not threading.main_thread()
    assert not seen[0].is_alive()  # its OpenMP team goes with it


def test_temporary_thread_reraises() -> None:
    def fail() -> None:
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        run_on_temporary_thread(fail)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_malloc_tuning_applies_on_glibc() -> None:
    assert tune_host_malloc() is True
