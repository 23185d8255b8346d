"""The usage ledger without a server: prices and cost arithmetic, the SQLite file (schema
version, migrations, writer thread), and `promptcache usage` on a seeded ledger."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from promptcache.api.store import ResponseStore
from promptcache.cli.main import main
from promptcache.ledger.diagnosis import Diagnosis
from promptcache.ledger.prices import OPENAI_PRICES, Price, PriceTable
from promptcache.ledger.report import UsageQuery, parse_time, usage
from promptcache.ledger.rows import LedgerRow
from promptcache.ledger.store import LEDGER_FILE, SCHEMA_VERSION, Ledger


def test_cost_arithmetic_for_two_models() -> None:
    # 2,000 prompt tokens: 1,024 cached, 896 written, 80 plain; 100 output tokens.
    mini, big = OPENAI_PRICES["gpt-5-mini"], OPENAI_PRICES["gpt-4.1"]
    assert mini.cost(2000, 1024, 896, 100) == pytest.approx(469.6e-6)
    assert mini.cost_without_cache(2000, 100) == pytest.approx(700e-6)
    assert big.cost(2000, 1024, 896, 100) == pytest.approx(3264e-6)
    assert big.cost_without_cache(2000, 100) == pytest.approx(4800e-6)


def test_price_table_from_config() -> None:
    table = PriceTable.from_config(
        {
            "my-model": {"input": 1.0, "output": 4.0},
            "gpt-5": {"input": 2, "output": 8, "cache_write": 2.5},
        }
    )
    assert table.for_model("my-model") == ("my-model", Price(1.0, 0.1, 4.0))  # 10 % cached
    assert table.for_model("gpt-5")[1].write == 2.5  # the config replaced the built-in row
    assert table.for_model("other") == ("gpt-5-mini", OPENAI_PRICES["gpt-5-mini"])
    assert table.for_model("other", "gpt-4o")[0] == "gpt-4o"
    with pytest.raises(ValueError, match="needs input and output"):
        PriceTable.from_config({"m": {"input": 1.0, "outptu": 2.0}})


def _row(t: float, tenant: str, model: str = "m", **kw: object) -> LedgerRow:
    base = LedgerRow(
        time=t,
        request_id="r",
        tenant=tenant,
        api_key_id=f"key_{tenant}",
        endpoint="chat.completions",
        model=model,
        retention="in_memory",
        prompt_cache_key=None,
        outcome="finished",
        finish_reason="stop",
        prompt_tokens=2000,
        cached_tokens=1024,
        cache_write_tokens=896,
        output_tokens=100,
        reused_tokens=1024,
        written_tokens=960,
        ttft_s=0.1,
        latency_s=1.0,
        price_row="gpt-5-mini",
        cost_usd=469.6e-6,
        cost_without_cache_usd=700e-6,
        cache_reason="full",
        matched_tokens=1024,
        error=None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


DAY1 = parse_time("2026-11-26T10:00")
DAY2 = parse_time("2026-11-27T09:30")


def _seeded(path: Path) -> None:
    ledger = Ledger(path)
    assert ledger.record(_row(DAY1, "a")) is None  # no event loop: nothing to await
    ledger.record(_row(DAY1 + 60, "b", model="n"))
    ledger.record(_row(DAY2, "a"))
    no_usage = {"cached_tokens": 0, "cache_write_tokens": 0, "output_tokens": 0}
    no_cost = {"cost_usd": 0.0, "cost_without_cache_usd": 0.0, "finish_reason": None}
    ledger.record(_row(DAY2 + 1, "a", outcome="rejected", prompt_tokens=9, **no_usage, **no_cost))
    ledger.record(_row(DAY2 + 2, "b"))
    ledger.close()


def test_file_schema_and_rows(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    _seeded(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    rows = Ledger(path).rows("tenant = ?", ["a"])
    assert [r.time for r in rows] == [DAY1, DAY2, DAY2 + 1]
    assert rows[0] == _row(DAY1, "a")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ValueError, match="newer than this promptcache"):
        Ledger(path)


@pytest.mark.parametrize(("level", "pragma"), [("normal", 1), ("full", 2)])
def test_sqlite_stores_commit_at_their_synchronous_level(
    tmp_path: Path, level: str, pragma: int
) -> None:
    """`ledger_synchronous` and `responses_synchronous`: what PRAGMA reports on each
    store's own connection (the level is per connection), rows still committed."""
    ledger = Ledger(tmp_path / LEDGER_FILE, level)
    store = ResponseStore(tmp_path / "responses.sqlite3", level)
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == pragma
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == pragma
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ledger.record(_row(DAY1, "a"))
    ledger.close()
    store.put("a", {"id": "resp_1"}, [])
    assert store.get("a", "resp_1") is not None
    store.close()
    assert [r.tenant for r in Ledger(tmp_path / LEDGER_FILE).rows()] == ["a"]


def test_sqlite_stores_refuse_a_level_that_may_corrupt(tmp_path: Path) -> None:
    for make in (Ledger, ResponseStore):
        with pytest.raises(ValueError, match="synchronous must be one of normal, full"):
            make(tmp_path / "off.sqlite3", "off")


def test_record_in_an_event_loop_resolves_once_committed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)

    async def write() -> None:
        done = ledger.record(_row(DAY1, "a"))
        assert done is not None
        await asyncio.wait_for(done, 30)
        assert len(ledger.rows()) == 1  # visible to another connection once resolved

    asyncio.run(write())
    ledger.close()


def test_usage_groups(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    _seeded(path)
    by_day = usage(path, UsageQuery(by="day"))
    assert [(g.group, g.requests, g.prompt_tokens) for g in by_day] == [
        ("2026-11-26", 2, 4000),
        ("2026-11-27", 3, 4000),  # the rejected request counts, its tokens don't
    ]
    only_a = usage(path, UsageQuery(tenant="a", by="model"))
    assert [(g.group, g.requests) for g in only_a] == [("m", 3)]
    since = usage(path, UsageQuery(since=DAY2, until=DAY2 + 2, by="key"))
    assert [(g.group, g.requests) for g in since] == [("key_a", 2)]
    assert usage(tmp_path / "none.sqlite3", UsageQuery()) == []


def test_usage_command_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seeded(tmp_path / LEDGER_FILE)
    assert main(["usage", "--data-dir", str(tmp_path), "--by", "tenant"]) == 0
    assert capsys.readouterr().out == (
        "| tenant | requests | prompt tokens | cached tokens | hit rate | output tokens "
        "| cost (USD) | without cache (USD) | saved (USD) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        "| a | 3 | 4000 | 2048 | 51.2% | 200 | 0.000939 | 0.001400 | 0.000461 |\n"
        "| b | 2 | 4000 | 2048 | 51.2% | 200 | 0.000939 | 0.001400 | 0.000461 |\n"
        "| total | 5 | 8000 | 4096 | 51.2% | 400 | 0.001878 | 0.002800 | 0.000922 |\n"
    )
    assert main(["usage", "--data-dir", str(tmp_path), "--since", "2026-11-27", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["by"] == "day" and [g["group"] for g in body["data"]] == ["2026-11-27"]
    assert body["total"]["requests"] == 3 and body["total"]["saved_usd"] == pytest.approx(
        2 * (700e-6 - 469.6e-6)
    )


@pytest.mark.parametrize("reason", ["diverged", "tools_changed", "format_changed"])
def test_diagnose_a_ledger_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reason: str
) -> None:
    found = Diagnosis(
        reason,
        "this prompt left the closest earlier prompt of this tenant at token 9",
        prompt_tokens=2000,
        cached_tokens=0,
        reused_tokens=0,
        matched_tokens=0,
        diverged_at=9,
        earlier_request_id="chatcmpl-1",
        this_text="at 10:16",
        earlier_text="at 10:15",
        dynamic=("time",),
    )
    ledger = Ledger(tmp_path / LEDGER_FILE)
    ledger.record(_row(DAY1, "a", request_id="chatcmpl-2", diagnosis=found.to_json()))
    ledger.close()
    assert main(["diagnose", "chatcmpl-2", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"reason: {reason} - this prompt left" in out
    assert "'at 10:16'" in out and "(chatcmpl-1)" in out  # both prompts around the change
    assert main(["diagnose", "chatcmpl-2", "--data-dir", str(tmp_path), "--json"]) == 0
    assert (
        Diagnosis(**{**json.loads(capsys.readouterr().out)["diagnosis"], "dynamic": ("time",)})
        == found
    )
    assert main(["diagnose", "nope", "--data-dir", str(tmp_path)]) == 1


def test_diagnose_two_prompts_and_lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = "You answer questions about invoices for ACME Corp, briefly and exactly. " * 20
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(body + "Today is 2026-11-26. What is due?")
    b.write_text(body + "Today is 2026-11-27. What is due?")
    assert main(["diagnose", "--prompts", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "they diverge at token" in out and "looks dynamic there: date" in out
    assert "report cached_tokens 0 under OpenAI's rules" in out  # under 1,024 tokens
    stamped = tmp_path / "stamped.txt"
    stamped.write_text("Current time: 2026-11-27T10:15:02Z\n" + body)
    assert main(["lint", str(stamped)]) == 1
    out = capsys.readouterr().out
    assert f"{stamped}:1: timestamp '2026-11-27T10:15:02Z'" in out
    assert main(["lint", str(a), "--min-prompt-tokens", "64"]) == 0  # the date comes later
    assert "no dynamic content in the first 64 tokens" in capsys.readouterr().out


def test_lint_flags_dynamic_tool_descriptions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    city = {"type": "string", "description": "session 7d9f2c1e-3b4a-4c5d-8e9f-0a1b2c3d4e5f"}
    schema = {"type": "object", "properties": {"city": city}}
    chat = {"name": "get_weather", "description": "Weather as of 2026-11-27T10:15:02Z."}
    tools = [
        {"type": "function", "function": {**chat, "parameters": schema}},
        {"name": "get_time", "description": "The time.", "input_schema": {"type": "object"}},
    ]
    path = tmp_path / "tools.json"
    path.write_text(json.dumps(tools))
    assert main(["lint", "--tools", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: tools[0] (get_weather) description: timestamp '2026-11-27T10:15:02Z'" in out
    assert "tools[0] (get_weather) parameters.city.description: uuid" in out
    assert "get_time" not in out
    path.write_text(json.dumps(tools[1:]))
    assert main(["lint", "--tools", str(path)]) == 0


def test_expired_and_evicted_reasons() -> None:
    from promptcache.cache.policy import CachePolicy
    from promptcache.engine.lifecycle import Outcome, RequestRecord
    from promptcache.engine.outputs import CacheReport, Usage
    from promptcache.engine.request import GenerationRequest
    from promptcache.ledger.diagnosis import PromptHistory, Rules, diagnose

    def record(expired: bool) -> RequestRecord:
        report = CacheReport(None, "in_memory", None, 512, "full", 0, DAY1, "in_memory", expired)
        return RequestRecord(
            request_id="r",
            outcome=Outcome.FINISHED,
            request=GenerationRequest(list(range(2000)), endpoint="chat.completions"),
            finish_reason="stop",
            usage=Usage(2000, 0, 0, 1, reused_tokens=512, written_tokens=1472),
            cache=report,
            ttft_s=0.1,
            latency_s=0.2,
            error=None,
        )

    rules = Rules(CachePolicy(True, 1024, 128), block_size=16)
    for expired, reason in ((True, "expired"), (False, "evicted")):
        found = diagnose(record(expired), rules, PromptHistory(4), lambda ids: "")
        assert found is not None and found.reason == reason and found.evicted_at == DAY1


def test_other_worker_reason_behind_the_router() -> None:
    from promptcache.cache.policy import CachePolicy
    from promptcache.cache.settings import CacheSettings
    from promptcache.engine.lifecycle import Outcome, RequestRecord
    from promptcache.engine.outputs import CacheReport, Usage
    from promptcache.engine.request import GenerationRequest
    from promptcache.ledger.diagnosis import PromptHistory, Rules, diagnose

    def record(tokens: list[int], worker: str, reused: int) -> RequestRecord:
        report = CacheReport("t", "in_memory", None, reused, "full", 0)
        return RequestRecord(
            request_id=f"r-{worker}-{reused}",
            outcome=Outcome.FINISHED,
            request=GenerationRequest(
                tokens, cache=CacheSettings(tenant="t"), endpoint="chat.completions"
            ),
            finish_reason="stop",
            usage=Usage(len(tokens), reused // 128 * 128, 0, 1, reused_tokens=reused),
            cache=report,
            ttft_s=0.1,
            latency_s=0.2,
            error=None,
            worker=worker,
        )

    rules = Rules(CachePolicy(True, 1024, 128), block_size=16)
    history = PromptHistory(4)
    shared = list(range(2000))
    history.add("t", "first", [*shared, 1, 2, 3], "http://w1")
    found = diagnose(record([*shared, 4, 5], "http://w2", 0), rules, history, lambda ids: "")
    assert found is not None and found.reason == "other_worker"
    assert (found.worker, found.earlier_worker) == ("http://w2", "http://w1")
    assert found.earlier_request_id == "first" and found.diverged_at == 2000
    same = diagnose(record([*shared, 4, 5], "http://w1", 1984), rules, history, lambda ids: "")
    assert same is not None and same.reason != "other_worker"  # it ran where the prefix was


def test_format_changed_reason_before_the_first_message() -> None:
    """A prompt that leaves the closest earlier one before its first message, with the same
    tools and another answer format, changed its format (shown after the tools), even when
    that message is its only one; other tools are `tools_changed` first; the same tools and
    format are neither."""
    from promptcache.cache.policy import CachePolicy
    from promptcache.cache.settings import CacheSettings
    from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolDef
    from promptcache.engine.lifecycle import Outcome, RequestRecord
    from promptcache.engine.outputs import CacheReport, Usage
    from promptcache.engine.request import GenerationRequest
    from promptcache.ledger.diagnosis import PromptHistory, Rules, diagnose
    from promptcache.text.chat import MessageSpan

    weather = (ToolDef("get_weather", '{"type": "object"}'),)
    report = OutputSpec(OutputKind.JSON_SCHEMA, '{"type": "object"}', tools=weather)
    preamble = list(range(1000, 1400))  # the tools, then the format: 400 tokens
    header = [7, 8, 9]  # the template's text before the message's content
    question = list(range(1, 1601))  # the one message's content: 1,600 tokens
    rules = Rules(CachePolicy(True, 1024, 128), block_size=16)

    def record(tokens: list[int], output: OutputSpec, reused: int) -> RequestRecord:
        first = len(tokens) - len(question)
        spans = (MessageSpan(0, "user", first, len(tokens), (len(tokens),)),)
        return RequestRecord(
            request_id="r",
            outcome=Outcome.FINISHED,
            request=GenerationRequest(
                tokens,
                cache=CacheSettings(tenant="t"),
                messages=spans,
                endpoint="responses",
                output=output,
            ),
            finish_reason="stop",
            usage=Usage(len(tokens), 0, 0, 1, reused_tokens=reused),
            cache=CacheReport("t", "in_memory", None, reused, "full", 0),
            ttft_s=0.1,
            latency_s=0.2,
            error=None,
        )

    def reason(head: list[int], output: OutputSpec) -> str:
        history = PromptHistory(4)
        digests = (report.tools_digest(), report.format_digest())
        history.add("t", "first", [*preamble, *header, *question], None, *digests)
        tokens = [*head, *header, *question]
        k = next(i for i, (a, b) in enumerate(zip(tokens, preamble, strict=False)) if a != b)
        found = diagnose(record(tokens, output, k // 16 * 16), rules, history, lambda ids: "")
        assert found is not None and found.diverged_at == k
        return found.reason

    other_schema = [*preamble[:300], *range(5000, 5100)]  # the format part changed
    listing = OutputSpec(OutputKind.JSON_SCHEMA, '{"type": "array"}', tools=weather)
    assert reason(other_schema, listing) == "format_changed"
    assert reason(preamble[:300], OutputSpec(tools=weather)) == "format_changed"  # now text
    clock = (ToolDef("get_time", '{"type": "object"}'),)
    both = OutputSpec(OutputKind.JSON_SCHEMA, '{"type": "array"}', tools=clock)
    assert reason([*preamble[:100], *range(5000, 5300)], both) == "tools_changed"
    assert reason(other_schema, report) == "diverged"  # same tools, same format


def test_an_old_ledger_is_migrated_with_its_rows(tmp_path: Path) -> None:
    from promptcache.ledger.store import MIGRATIONS

    path = tmp_path / LEDGER_FILE
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])  # a ledger written by schema version 1
    db.execute("PRAGMA user_version = 1")
    v1 = [
        c
        for c in LedgerRow.columns()
        if c
        not in ("diagnosis", "reused_host_tokens", "reused_disk_tokens", "cache_write_long_tokens")
    ]
    row = _row(DAY1, "a")
    values = [getattr(row, c) for c in v1]
    db.execute(
        f"INSERT INTO requests ({', '.join(v1)}) VALUES ({', '.join('?' * len(v1))})", values
    )
    db.commit()
    db.close()
    ledger = Ledger(path)
    [old] = ledger.rows()
    ledger.close()
    assert old == row  # the new columns read as their defaults
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    db.close()


@pytest.mark.parametrize("k", [0, 1, 255, 256, 257, 700, 1000])
def test_common_prefix_across_chunk_boundaries(k: int) -> None:
    from promptcache.ledger.diagnosis import common_prefix

    a = list(range(1000))
    b = a[:k] + [-1] * 5
    assert common_prefix(a, b) == common_prefix(b, a) == k
    assert common_prefix(a, a) == 1000


def test_anthropic_rows_price_writes_by_ttl() -> None:
    from promptcache.cache.settings import Breakpoint, CacheSettings, Retention

    sonnet = PriceTable().rows["claude-sonnet-4-5"]
    assert (sonnet.input, sonnet.cached_input, sonnet.write, sonnet.write_long) == pytest.approx(
        (3.0, 0.3, 3.75, 6.0)
    )
    # 100 uncached, 1,000 read, 300 written of which 200 kept an hour, 10 out
    cost = sonnet.cost(1400, 1000, 300, 10, write_long=200)
    assert cost == pytest.approx((100 * 3 + 1000 * 0.3 + 100 * 3.75 + 200 * 6 + 10 * 15) / 1e6)
    row = Price.from_table("m", {"input": 2, "output": 8, "cache_write": 2.5, "cache_write_1h": 4})
    assert (row.write, row.write_long) == (2.5, 4.0)
    assert Price(1.0, 0.1, 4.0).write_long == 1.0  # OpenAI: writes are ordinary input
    marks = (Breakpoint(1200, Retention.ONE_HOUR), Breakpoint(1300, Retention.FIVE_MINUTES))
    settings = CacheSettings(retention=Retention.FIVE_MINUTES, breakpoints=marks)
    assert settings.kept_long(1000, 1300) == 200
    assert CacheSettings(retention=Retention.EXTENDED).kept_long(0, 500) == 500
