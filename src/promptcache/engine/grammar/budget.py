"""Run grammar compiles under a time budget in a small pool of threads of their own, so a
schema crafted to make compilation explode costs the caller a 400 at the deadline and never
holds the engine or more than the pool's threads.

XGrammar cannot be interrupted: its compile is C++ that releases the GIL and offers no
cancellation, and a Python thread cannot be killed. So the caller waits on the compile's
future for `timeout_s` and is refused at the deadline while the compile runs on to its
end in the background, holding one of the pool's `threads` (the bound on how many cores
compiles may take, however many schemas arrive). A compile past its budget marks its key
`too complex`: the same schema is then refused at once, without compiling again, and the
late result is dropped, so the answer to a schema does not change with timing. Callers
asking for a key already compiling wait on the same future (one compile per schema).

A caller whose compile has not even started by its deadline (every thread held by earlier
compiles) is told the server is busy (`EngineOverloaded`, a 429), not that its schema is
too complex: it never ran.

Why not a subprocess, which could be killed: every compiled grammar (its per-token mask
cache) would have to cross back serialized, 3.5 MB and 0.4 s for a 20-property pattern
schema that compiles in 0.75 s (docs/design/reliability.md#hostile-schemas), and each
child process would hold its own copy of the tokenizer's vocabulary.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from promptcache.engine.errors import EngineOverloaded, RequestError

T = TypeVar("T")
THREAD_PREFIX = "grammar-compile"


class CompileBudget(Generic[T]):
    """Compiles keyed by a digest, each under `timeout_s`, at most `threads` at once."""

    def __init__(self, threads: int, timeout_s: float, remembered: int = 1024) -> None:
        self.timeout_s = timeout_s
        self._pool = cf.ThreadPoolExecutor(threads, thread_name_prefix=THREAD_PREFIX)
        self._running: dict[str, cf.Future[T]] = {}
        self._too_complex: OrderedDict[str, None] = OrderedDict()
        self._remembered = remembered
        self._lock = threading.Lock()
        self.timeouts = 0  # compiles that ran past the budget

    def run(self, key: str, compile_: Callable[[], T], param: str) -> tuple[T, bool]:
        """`compile_()`'s result, and whether this call compiled it (False: it waited on
        another caller's compile). Raises `RequestError` (code `grammar_too_complex`,
        naming `param`) when the compile runs past the budget, or did before."""
        with self._lock:
            if key in self._too_complex:
                raise self._refusal(param)
            future = self._running.get(key)
            started = future is None
            if future is None:
                future = self._pool.submit(compile_)
                self._running[key] = future
        if started:  # outside the lock: a compile already done calls back at once, here
            future.add_done_callback(lambda _: self._forget(key, future))
        try:
            result = future.result(self.timeout_s)
        except cf.TimeoutError:
            raise self._past_deadline(key, future, param) from None
        except cf.CancelledError:
            raise self._busy() from None
        if self.is_too_complex(key):  # it ran past another caller's deadline: dropped
            raise self._refusal(param)
        return result, started

    @property
    def in_flight(self) -> int:
        """Compiles queued or running, those past their deadline included."""
        with self._lock:
            return len(self._running)

    def is_too_complex(self, key: str) -> bool:
        with self._lock:
            return key in self._too_complex

    def _past_deadline(self, key: str, future: cf.Future[T], param: str) -> Exception:
        if future.cancel():  # still queued: every thread was busy, the schema never ran
            return self._busy()
        with self._lock:
            if key not in self._too_complex:
                self.timeouts += 1
                self._too_complex[key] = None
                while len(self._too_complex) > self._remembered:
                    self._too_complex.popitem(last=False)
        return self._refusal(param)

    def _forget(self, key: str, future: cf.Future[T]) -> None:
        with self._lock:
            if self._running.get(key) is future:
                del self._running[key]

    def _refusal(self, param: str) -> RequestError:
        return RequestError(
            f"the schema in {param} takes longer to compile into a grammar than this "
            f"server's limit of {self.timeout_s:g} s (grammar_compile_timeout_s)",
            "grammar_too_complex",
            param,
        )

    def _busy(self) -> EngineOverloaded:
        return EngineOverloaded(
            f"the server is busy: every grammar compile thread was taken for "
            f"{self.timeout_s:g} s (grammar_compile_timeout_s)"
        )

    def shutdown(self) -> None:
        """Stop taking compiles; those running finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)
