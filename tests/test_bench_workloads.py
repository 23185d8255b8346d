"""`promptcache bench` without a server: workloads are exact and seeded, figures are exact."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.bench.records import RequestRecord
from promptcache.bench.report import markdown, summarize
from promptcache.bench.run import load_tokenizer
from promptcache.bench.workloads import WorkloadSpec, build_sessions, describe
from promptcache.ledger.prices import OPENAI_PRICES, Price, price_for


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(None)


def _n(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def test_shared_prefix_sizes_order_and_seed(tokenizer: Any) -> None:
    spec = WorkloadSpec.for_name("shared-prefix", small=True, groups=3, prompts_per_group=2)
    sessions = build_sessions(spec, tokenizer)
    assert [s.tag for s in sessions] == ["g0/p0", "g1/p0", "g2/p0", "g0/p1", "g1/p1", "g2/p1"]
    assert all(_n(tokenizer, s.system) == 1024 for s in sessions)
    assert all(_n(tokenizer, s.questions[0]) == 64 for s in sessions)
    assert sessions[0].system == sessions[3].system != sessions[1].system
    assert len({s.questions[0] for s in sessions}) == 6
    assert build_sessions(spec, tokenizer) == sessions  # seeded: the same run twice
    grouped = WorkloadSpec.for_name("shared-prefix", small=True, groups=3, order="grouped")
    assert [s.tag for s in build_sessions(grouped, tokenizer)][:5] == [
        "g0/p0",
        "g0/p1",
        "g0/p2",
        "g0/p3",
        "g1/p0",
    ]
    other_seed = WorkloadSpec.for_name("shared-prefix", small=True, groups=3, seed=1)
    assert build_sessions(other_seed, tokenizer)[0].system != sessions[0].system


def test_shared_prefix_system_sizes_spread(tokenizer: Any) -> None:
    spec = WorkloadSpec.for_name(
        "shared-prefix", small=True, groups=5, system_tokens=900, system_tokens_max=1000
    )
    sessions = build_sessions(spec, tokenizer)[:5]  # interleaved: one of each group
    assert [_n(tokenizer, s.system) for s in sessions] == [900, 925, 950, 975, 1000]
    assert "system_tokens_max=1000" in describe(spec)
    assert "system_tokens_max" not in describe(WorkloadSpec.for_name("shared-prefix"))
    with pytest.raises(ValueError, match="below system_tokens"):
        WorkloadSpec.for_name("shared-prefix", system_tokens=900, system_tokens_max=800)


def test_defaults_follow_sglang_and_small_preset() -> None:
    spec = WorkloadSpec.for_name("shared-prefix")
    sizes = (spec.groups, spec.prompts_per_group, spec.system_tokens)
    assert (*sizes, spec.question_tokens, spec.output_tokens) == (64, 16, 2048, 128, 256)
    small = WorkloadSpec.for_name("shared-prefix", small=True, output_tokens=8)
    assert (small.groups, small.prompts_per_group, small.output_tokens) == (4, 4, 8)
    assert WorkloadSpec.for_name("seed").system_tokens == 4616


def test_multi_turn_carries_history(tokenizer: Any) -> None:
    spec = WorkloadSpec.for_name("multi-turn", users=2, rounds=3, system_tokens=128)
    s = build_sessions(spec, tokenizer)[1]
    assert s.keep_history and len(s.questions) == 3
    msgs = s.messages(2, ["first answer", "second answer"])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in msgs[2::2]] == ["first answer", "second answer"]
    assert msgs[-1]["content"].startswith("User 1, round 2:")


def test_seed_and_no_reuse(tokenizer: Any) -> None:
    seed = build_sessions(WorkloadSpec.for_name("seed", num_prompts=3), tokenizer)
    assert len({s.system for s in seed}) == 1 and _n(tokenizer, seed[0].system) == 4616
    assert seed[1].questions == ("What's regularization?",)
    unique = build_sessions(WorkloadSpec.for_name("no-reuse", small=True), tokenizer)
    assert len({s.system[:40] for s in unique}) == len(unique) == 8


def _rec(start: float, chunks: list[float], prompt: int, cached: int, out: int) -> RequestRecord:
    r = RequestRecord(0, 0, "t", start=start, end=chunks[-1] + 0.5, chunk_times=chunks)
    r.prompt_tokens, r.cached_tokens, r.completion_tokens = prompt, cached, out
    r.usage_reported, r.finish_reason = True, "stop"
    return r


def test_summary_figures_are_exact() -> None:
    records = [
        _rec(0.0, [2.0, 2.1, 2.3], 2000, 0, 3),
        _rec(3.0, [3.5, 3.6, 3.7], 2000, 1920, 3),
        RequestRecord(0, 1, "t", start=4.0, end=4.1, error="http_429"),
    ]
    price = Price(input=1.0, cached_input=0.1, output=10.0)
    s = summarize(records, wall_s=5.0, price=price, price_model="custom")
    assert (s.requests, s.ok, s.errors) == (3, 2, {"http_429": 1})
    assert (s.prompt_tokens, s.cached_tokens, s.completion_tokens) == (4000, 1920, 6)
    assert s.hit_rate == pytest.approx(0.48)
    assert s.ttft_s["p50"] == pytest.approx(1.25)  # median of 2.0 and 0.5
    assert s.requests_per_s == pytest.approx(0.4) and s.output_tokens_per_s == pytest.approx(1.2)
    assert s.cost_no_cache_usd == pytest.approx((4000 * 1.0 + 6 * 10.0) / 1e6)
    assert s.cost_usd == pytest.approx((2080 * 1.0 + 1920 * 0.1 + 6 * 10.0) / 1e6)
    table = markdown({"ours": s}, "## t")
    assert "| ours | 2/3 | http_429 1 | 4000 | 1920 | 48.0 % |" in table


def test_prices() -> None:
    assert price_for("gpt-4.1", None, None) == ("gpt-4.1", OPENAI_PRICES["gpt-4.1"])
    assert price_for("smollm2-135m-instruct", None, None)[0] == "gpt-5-mini"
    assert price_for("m", None, "2,,8") == ("custom", Price(2.0, 0.2, 8.0))
    with pytest.raises(ValueError, match="IN,CACHED,OUT"):
        Price.parse("1,2")
    with pytest.raises(ValueError, match="unknown --price-model"):
        price_for("m", "gpt-0", None)


def test_long_tail_revisits_every_prefix_round_robin(tokenizer: Any) -> None:
    spec = WorkloadSpec.for_name("long-tail", small=True, num_prompts=3, rounds=2)
    sessions = build_sessions(spec, tokenizer)
    assert [s.tag for s in sessions] == ["p0/v0", "p1/v0", "p2/v0", "p0/v1", "p1/v1", "p2/v1"]
    assert sessions[0].system == sessions[3].system != sessions[1].system
    assert all(_n(tokenizer, s.system) == 1024 for s in sessions)
    assert sessions[0].questions != sessions[3].questions  # a new question each visit
    assert describe(spec).startswith("long-tail (num_prompts=3, rounds=2, system_tokens=1024")
