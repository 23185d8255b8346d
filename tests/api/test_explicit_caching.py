"""OpenAI's explicit prompt caching through the official SDK: `prompt_cache_breakpoint` on
content parts and `prompt_cache_options`, on Chat Completions and Responses."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from promptcache.text.chat import render_chat
from tests.api.inprocess import MODEL, Running

pytestmark = pytest.mark.server

DOC = (
    "Reference sheet. The tide tables list high and low water for each harbour, with "
    "heights in metres above chart datum and times in local standard time. "
) * 36
EXPLICIT: Any = {"mode": "explicit"}
MARK: Any = {"mode": "explicit"}


def _system(doc: str) -> dict[str, Any]:
    return {
        "role": "system",
        "content": [{"type": "text", "text": doc, "prompt_cache_breakpoint": MARK}],
    }


def _mid_block_doc(running: Running) -> tuple[str, int]:
    """A document whose breakpoint lands inside a 16-token block (and off 128), with the
    breakpoint's token position."""
    tokenizer = running.engine.tokenizer
    for extra in range(40):
        doc = DOC + " tide" * extra
        spans = render_chat(tokenizer, [{"role": "system", "content": [doc]}]).messages
        position = spans[0].part_ends[0]
        if position % 16 and position % 128 and position > 1024:
            return doc, position
    raise AssertionError("no mid-block document length found")


def _chat(running: Running, messages: list[Any], **extra: Any) -> Any:
    return running.client().chat.completions.create(
        model=MODEL, messages=messages, max_tokens=4, temperature=0, **extra
    )


def _question(q: str) -> dict[str, Any]:
    return {"role": "user", "content": q}


def test_breakpoint_in_a_block_is_hit_exactly(running: Running) -> None:
    doc, position = _mid_block_doc(running)
    first = _chat(running, [_system(doc), _question("When is high water?")])
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert first.usage.prompt_tokens_details.cache_write_tokens >= position  # implicit too
    second = _chat(running, [_system(doc), _question("And low water?")])
    assert second.usage.prompt_tokens_details.cached_tokens == position
    explicit = _chat(
        running,
        [_system(doc), _question("Which datum?")],
        prompt_cache_options=EXPLICIT,
    )
    assert explicit.usage.prompt_tokens_details.cached_tokens == position
    assert explicit.usage.prompt_tokens_details.cache_write_tokens == 0
    seq = running.sequences[-1]
    assert [b.position for b in seq.cache.settings.breakpoints] == [position]
    assert seq.cache.settings.retention.value == "30m"


def test_explicit_mode_without_breakpoints_writes_nothing(running: Running) -> None:
    messages = [{"role": "system", "content": DOC}, _question("Hello?")]
    first = _chat(running, messages, prompt_cache_options=EXPLICIT)
    assert first.usage.prompt_tokens_details.cache_write_tokens == 0
    again = _chat(running, messages, prompt_cache_options=EXPLICIT)
    assert again.usage.prompt_tokens_details.cached_tokens == 0
    assert running.engine.cache.counters.write_tokens == 0


def test_only_the_latest_breakpoints_are_written(running: Running) -> None:
    parts = [
        {"type": "text", "text": f"Section {i}. " + DOC[:400], "prompt_cache_breakpoint": MARK}
        for i in range(6)
    ]
    messages = [{"role": "system", "content": parts}, _question("Which section?")]
    for mode, kept in (("explicit", 4), ("implicit", 3)):
        _chat(running, messages, prompt_cache_options={"mode": mode})
        seq = running.sequences[-1]
        ends = seq.messages[0].part_ends
        assert [b.position for b in seq.cache.settings.breakpoints] == list(ends[-kept:])


def test_ttl_with_retention_is_refused(running: Running) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _chat(
            running,
            [_question("Hi")],
            prompt_cache_options={"ttl": "30m"},
            prompt_cache_retention="24h",
        )
    assert err.value.body["param"] == "prompt_cache_retention"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        running.client().responses.create(
            model=MODEL,
            input="Hi",
            prompt_cache_options={"ttl": "30m"},
            prompt_cache_retention="in_memory",
        )


def test_responses_breakpoint_on_an_input_part(running: Running) -> None:
    doc, position = _mid_block_doc(running)
    system: Any = {
        "role": "system",
        "content": [{"type": "input_text", "text": doc, "prompt_cache_breakpoint": MARK}],
    }
    client = running.client()
    options: Any = {"mode": "explicit", "ttl": "12h"}
    first = client.responses.create(
        model=MODEL,
        input=[system, _question("High water?")],
        max_output_tokens=4,
        prompt_cache_options=options,
    )
    assert first.usage is not None
    assert first.usage.input_tokens_details.cache_write_tokens == position
    assert first.prompt_cache_options is not None and first.prompt_cache_options.ttl == "12h"
    second = client.responses.create(
        model=MODEL,
        input=[system, _question("Low water?")],
        max_output_tokens=4,
        prompt_cache_options=options,
    )
    assert second.usage is not None
    assert second.usage.input_tokens_details.cached_tokens == position
    assert running.sequences[-1].cache.settings.breakpoints[0].retention.value == "12h"
