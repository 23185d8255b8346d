"""Process-level helpers of the engine: the build thread, the allocator settings and the
bound on oneDNN's kernel caches."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading

import pytest
import torch

from promptcache.engine.host_memory import (
    ONEDNN_CACHE_VARIABLES,
    bound_onednn_caches,
    tune_host_malloc,
)
from promptcache.engine.openmp import run_on_temporary_thread
from promptcache.model.device import can_pack


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


def test_onednn_bound_sets_unset_variables_and_keeps_the_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lru, primitive = ONEDNN_CACHE_VARIABLES
    monkeypatch.delenv(lru, raising=False)
    monkeypatch.setenv(primitive, "7")
    assert bound_onednn_caches(64) == {lru: "64", primitive: "7"}
    monkeypatch.delenv(lru)
    assert bound_onednn_caches(0) == {lru: "default", primitive: "7"}


# 400 distinct row counts through one bf16 linear, in a fresh process (oneDNN reads the
# capacities once): the kernel cache holds an output-sized buffer per shape. It prints the
# RSS growth over the second 200.
_GROWTH = """
import sys, torch
from promptcache.engine.host_memory import bound_onednn_caches
bound_onednn_caches(int(sys.argv[1]))
from promptcache.model.layers.packed_linear import PackedLinear
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1])
lin = PackedLinear(torch.randn(1536, 576).bfloat16(), None)
for m in range(1, 20):
    lin(torch.randn(m, 576).bfloat16())
for m in range(600, 800):
    lin(torch.randn(m, 576).bfloat16())
middle = rss()
for m in range(800, 1000):
    lin(torch.randn(m, 576).bfloat16())
print((rss() - middle) // 1024)
"""


def _second_half_growth_mib(capacity: int) -> int:
    run = subprocess.run(
        [sys.executable, "-c", _GROWTH, str(capacity)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k not in ONEDNN_CACHE_VARIABLES},
    )
    return int(run.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(
    not can_pack(torch.device("cpu"), torch.bfloat16) or not sys.platform.startswith("linux"),
    reason="oneDNN bf16 linears on Linux only",
)
def test_onednn_bound_keeps_memory_flat_over_new_shapes() -> None:
    # Over the second 200 shapes: unbounded adds 200 kernels of 2.2-2.9 MiB each (measured
    # +530 MiB); bounded, the cache is already full and evicts (measured 0-29 MiB).
    unbounded = _second_half_growth_mib(0)
    bounded = _second_half_growth_mib(32)
    assert unbounded > 300
    assert bounded < 80
