"""Keep the process to one OpenMP thread team: build on a short-lived thread, run on another.

PyTorch's CPU kernels run in OpenMP parallel regions, and GNU libgomp keeps one team of
worker threads per thread that ever entered one. When the process holds more OpenMP
threads than CPUs, libgomp cuts its workers' spin-wait to 100 iterations, so every small
parallel region must wake a sleeping worker. A server that loads its model on the main
thread and then steps the engine on its own thread holds two teams: measured on 2 cores,
decode steps at 4.6k context 46 -> 77 ms and a cache hit's first step 135 -> 199 ms.
Loading on a thread that then exits frees its team (libgomp's thread destructor), leaving
only the engine thread's. Nothing else in the server may run tensor ops on the main thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_on_temporary_thread(fn: Callable[[], T]) -> T:
    """`fn()` on a new thread that exits afterwards; its result, or its exception, here."""
    with ThreadPoolExecutor(1, thread_name_prefix="promptcache-load") as pool:
        return pool.submit(fn).result()
