"""The grammar compile budget (engine/grammar/budget.py) and the schema size limits
(api/schema_limits.py), without a model: compiles that block on an event stand in for
slow ones, so each outcome is exact whatever the machine's speed."""

from __future__ import annotations

import threading
import time

import pytest

from promptcache.api.errors import APIError
from promptcache.api.schema_limits import SchemaLimits, json_depth
from promptcache.engine.errors import EngineOverloaded, RequestError
from promptcache.engine.grammar.budget import THREAD_PREFIX, CompileBudget
from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolDef


class Blocked:
    """A compile that runs until released, remembering its calls and their threads."""

    def __init__(self, result: str = "grammar") -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.threads: list[str] = []
        self.result = result

    def __call__(self) -> str:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        self.release.wait(30)
        return self.result


def test_a_compile_past_the_budget_is_refused_naming_the_limit() -> None:
    budget = CompileBudget[str](threads=2, timeout_s=0.05)
    slow = Blocked()
    with pytest.raises(RequestError) as info:
        budget.run("k", slow, "format")
    assert info.value.code == "grammar_too_complex" and info.value.param == "format"
    assert str(info.value) == (
        "the schema in format takes longer to compile into a grammar than this server's "
        "limit of 0.05 s (grammar_compile_timeout_s)"
    )
    assert slow.threads == [f"{THREAD_PREFIX}_0"]  # never the caller's thread
    assert budget.timeouts == 1
    again = Blocked()
    with pytest.raises(RequestError):  # refused at once, without compiling again
        budget.run("k", again, "tools")
    assert again.threads == [] and budget.timeouts == 1
    slow.release.set()
    budget.shutdown()


def test_a_late_result_is_dropped_for_every_waiter() -> None:
    """B joins A's compile later; A's deadline passes first, then the compile ends within
    B's: B is refused too, so the answer to a schema does not depend on timing."""
    budget = CompileBudget[str](threads=1, timeout_s=1.0)
    slow = Blocked()
    outcome: dict[str, object] = {}

    def caller(name: str) -> None:
        try:
            outcome[name] = budget.run("k", slow, "format")
        except RequestError as exc:
            outcome[name] = exc.code

    a = threading.Thread(target=caller, args=("a",))
    a.start()
    slow.started.wait(10)
    time.sleep(0.5)
    b = threading.Thread(target=caller, args=("b",))
    b.start()
    a.join(10)
    assert budget.timeouts == 1
    slow.release.set()  # within b's deadline
    b.join(10)
    assert outcome == {"a": "grammar_too_complex", "b": "grammar_too_complex"}
    assert len(slow.threads) == 1
    budget.shutdown()


def test_callers_of_one_key_share_one_compile() -> None:
    budget = CompileBudget[str](threads=2, timeout_s=10.0)
    compile_ = Blocked("g")
    results: list[tuple[str, bool]] = []
    waiters = [
        threading.Thread(target=lambda: results.append(budget.run("k", compile_, "format")))
        for _ in range(3)
    ]
    for w in waiters:
        w.start()
    compile_.started.wait(10)
    time.sleep(0.5)  # the other two callers reach the running compile
    compile_.release.set()
    for w in waiters:
        w.join(10)
    assert len(compile_.threads) == 1
    assert sorted(results) == [("g", False), ("g", False), ("g", True)]
    budget.shutdown()


def test_a_compile_that_never_started_is_busy_not_too_complex() -> None:
    budget = CompileBudget[str](threads=1, timeout_s=0.05)
    hostile = Blocked()
    with pytest.raises(RequestError):
        budget.run("hostile", hostile, "format")  # keeps the only thread
    queued = Blocked()
    with pytest.raises(EngineOverloaded):
        budget.run("benign", queued, "format")
    assert queued.threads == [] and not budget.is_too_complex("benign")
    hostile.release.set()
    fast = Blocked("ok")
    fast.release.set()
    assert budget.run("benign", fast, "format") == ("ok", True)  # served once a thread frees
    budget.shutdown()


def test_json_depth() -> None:
    assert json_depth('"x"') == 0
    assert json_depth('{"a": [1, {"b": "[[{{"}]}') == 3  # brackets in strings do not count
    assert json_depth('{"a": "\\"{"}') == 1
    assert json_depth("[" * 50 + "]" * 50) == 50


def _schema(depth: int) -> str:
    return '{"items": ' * (depth - 1) + "{}" + "}" * (depth - 1)


def test_schema_limits_name_the_limit_and_the_field() -> None:
    limits = SchemaLimits(max_schema_bytes=100, max_schema_depth=4, max_tools=2)
    limits.check(OutputSpec(OutputKind.JSON_SCHEMA, _schema(4)), "text.format")
    cases = [
        (OutputSpec(OutputKind.JSON_SCHEMA, _schema(5)), "text.format", "schema_too_deep"),
        (
            OutputSpec(OutputKind.JSON_SCHEMA, '"' + "x" * 99 + '"'),
            "text.format",
            "schema_too_large",
        ),
        (OutputSpec(tools=(ToolDef("f", _schema(5)),)), "tools", "schema_too_deep"),
        (OutputSpec(tools=(ToolDef("f"),) * 3), "tools", "too_many_tools"),
    ]
    for spec, param, code in cases:
        with pytest.raises(APIError) as info:
            limits.check(spec, "text.format")
        assert (info.value.status, info.value.param, info.value.code) == (400, param, code)
    with pytest.raises(APIError) as info:
        limits.check(OutputSpec(OutputKind.JSON_SCHEMA, _schema(5)), "response_format")
    assert info.value.message == (
        "the schema in response_format nests 5 levels deep, more than this server's limit "
        "of 4 (max_schema_depth)"
    )
