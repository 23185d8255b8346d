"""Compile an `OutputSpec` into an XGrammar grammar for the model's tokenizer, once: an LRU
of compiled grammars keyed by the spec's digest, with counts and compile time for /metrics.

Compilation runs in the threads of a `CompileBudget` (`budget`), under the time budget
`grammar_compile_timeout_s`, whatever thread asks: never in the engine's step loop, and a
schema that compiles for longer is refused (400). The grammars themselves are built by
`forms` (shared with the router, which hands them to vLLM workers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any

import xgrammar as xgr

from promptcache.engine.errors import RequestError
from promptcache.engine.grammar.budget import CompileBudget
from promptcache.engine.grammar.forms import SourceKind, first_line, grammar_source
from promptcache.engine.grammar.mask import Matcher
from promptcache.engine.grammar.spec import OutputSpec

log = logging.getLogger(__name__)

ENCODINGS_KEPT = 4096


@dataclass(slots=True)
class GrammarStats:
    compiles: int = 0
    hits: int = 0
    failures: int = 0
    compile_seconds: float = 0.0


class GrammarCache:
    """Compiled grammars for one tokenizer, least recently used dropped past `capacity`,
    compiled under `budget`."""

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        capacity: int,
        budget: CompileBudget[xgr.CompiledGrammar],
    ) -> None:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._tokenizer = tokenizer
        self._encodings: dict[str, list[int]] = {}
        self.vocab_size = vocab_size
        self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self._grammars: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()
        self.budget = budget
        self.stats = GrammarStats()

    def matcher(self, compiled: xgr.CompiledGrammar) -> Matcher:
        """A new request's matcher (engine thread)."""
        return Matcher(compiled, self._encode)

    def _encode(self, text: str) -> list[int]:
        """Ids of a forced text, remembered (the same few texts recur in every output)."""
        ids = self._encodings.get(text)
        if ids is None:
            if len(self._encodings) >= ENCODINGS_KEPT:
                self._encodings.clear()
            ids = self._tokenizer.encode(text, add_special_tokens=False)
            self._encodings[text] = ids
        return ids

    def get(self, spec: OutputSpec) -> xgr.CompiledGrammar:
        """The compiled grammar of `spec` (which must be `constrained`), compiled in the
        budget's threads if not cached; blocks the calling thread up to the budget. Raises
        `RequestError` naming the schema the library cannot compile or that compiles for
        too long, `EngineOverloaded` when no compile thread was free in time."""
        key = spec.key()
        with self._lock:
            found = self._grammars.get(key)
            if found is not None:
                self._grammars.move_to_end(key)
                self.stats.hits += 1
                return found
        param = "tools" if spec.calls_tools else "format"
        try:
            compiled, compiled_here = self.budget.run(key, partial(self._timed, spec), param)
        except RequestError:
            with self._lock:
                self.stats.failures += 1
            raise
        if compiled_here:
            self._keep(key, compiled)
        return compiled

    def _timed(self, spec: OutputSpec) -> xgr.CompiledGrammar:
        """Compile (in a budget thread), adding the time taken to the stats."""
        start = time.perf_counter()
        try:
            return self._compile(spec)
        finally:
            with self._lock:
                self.stats.compile_seconds += time.perf_counter() - start

    def _keep(self, key: str, compiled: xgr.CompiledGrammar) -> None:
        with self._lock:
            self.stats.compiles += 1
            self._grammars[key] = compiled
            while len(self._grammars) > self._capacity:
                self._grammars.popitem(last=False)

    def _compile(self, spec: OutputSpec) -> xgr.CompiledGrammar:
        source = grammar_source(spec)
        if source.kind is SourceKind.GRAMMAR:
            return self._compiler.compile_grammar(source.text)
        try:
            return self._compiler.compile_structural_tag(source.text)
        except Exception as exc:
            msg = f"the tools cannot be compiled into a grammar: {first_line(exc)}"
            raise RequestError(msg, "invalid_schema", "tools") from exc
