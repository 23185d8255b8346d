"""The official `openai` SDK against a real server: both endpoints, streamed and not, with
prompt-cache usage asserted exactly."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseCompletedEvent, ResponseTextDeltaEvent
from transformers import AutoTokenizer

from promptcache.model.loading.loader import resolve_model_path
from tests.api.helpers import MODEL, Server

pytestmark = pytest.mark.server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG_SYSTEM = (
    "You are a tutor for a machine-learning course. Answer briefly, in plain "
    "words, with one example. "
) * 70


def expected_hit(first: list[int], second: list[int], block: int = 16) -> int:
    """OpenAI's cached_tokens for `second` after `first`, from token ids alone."""
    common = 0
    while common < min(len(first), len(second)) and first[common] == second[common]:
        common += 1
    usable = min(common // block * block, len(second) - 1)
    hit = usable // 128 * 128
    return hit if hit >= 1024 else 0


def render(messages: list[dict[str, str]]) -> list[int]:
    tok = AutoTokenizer.from_pretrained(resolve_model_path(None))
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tok.encode(text, add_special_tokens=False))


def test_chat_completion(server: Server) -> None:
    out = server.client().chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=30
    )
    assert isinstance(out, ChatCompletion)
    assert out.choices[0].message.content == "The capital of France is Paris."
    assert out.choices[0].finish_reason == "stop"
    assert out.object == "chat.completion" and out.model == MODEL
    assert out.usage is not None and out.usage.prompt_tokens == 37
    assert out.usage.prompt_tokens_details is not None
    assert out.usage.prompt_tokens_details.cached_tokens == 0
    assert out.usage.total_tokens == 37 + out.usage.completion_tokens


def test_chat_stream_with_usage(server: Server) -> None:
    stream = server.client().chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The capital of France is Paris."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 37
    assert all(c.usage is None for c in chunks[:-1])


def test_chat_stop_and_length(server: Server) -> None:
    client = server.client()
    stopped = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, stop=[" Paris"]
    )
    assert stopped.choices[0].message.content == "The capital of France is"
    assert stopped.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_completion_tokens=3
    )
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 3


def test_responses_create_and_stream(server: Server) -> None:
    client = server.client()
    out = client.responses.create(
        model=MODEL, input="What is the capital of France?", temperature=0, max_output_tokens=30
    )
    assert isinstance(out, Response)
    assert out.status == "completed" and out.output_text == "The capital of France is Paris."
    assert out.usage is not None and out.usage.input_tokens == 37
    assert out.usage.input_tokens_details.cached_tokens == 0
    events = list(
        client.responses.create(
            model=MODEL,
            input="What is the capital of France?",
            temperature=0,
            max_output_tokens=30,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert "".join(d.delta for d in deltas) == "The capital of France is Paris."
    done = events[-1]
    assert isinstance(done, ResponseCompletedEvent)
    assert done.response.output_text == "The capital of France is Paris."
    short = client.responses.create(
        model=MODEL, input="Tell me a story.", temperature=0, max_output_tokens=5
    )
    assert short.status == "incomplete" and short.incomplete_details is not None
    assert short.incomplete_details.reason == "max_output_tokens"


def _cached(usage: Any) -> int:
    return int(usage.input_tokens_details.cached_tokens)


def test_repeated_prefix_hits_exactly(server: Server) -> None:
    client = server.client()
    questions = ["What's overfitting?", "What's regularization?"]
    prompts = [
        render([{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": q}])
        for q in questions
    ]
    want = expected_hit(prompts[0], prompts[1])
    assert want >= 1024
    first = client.responses.create(
        model=MODEL,
        instructions=LONG_SYSTEM,
        input=questions[0],
        temperature=0,
        max_output_tokens=8,
    )
    second = client.responses.create(
        model=MODEL,
        instructions=LONG_SYSTEM,
        input=questions[1],
        temperature=0,
        max_output_tokens=8,
    )
    assert first.usage is not None and second.usage is not None
    assert first.usage.input_tokens == len(prompts[0])
    assert _cached(first.usage) == 0
    # Reported writes follow OpenAI's increment; the physical ones are whole 16-token blocks.
    details = first.usage.input_tokens_details
    assert details.cache_write_tokens == len(prompts[0]) // 16 * 16 // 128 * 128
    assert details.model_extra == {"reused_tokens": 0}
    assert _cached(second.usage) == want
    chat = client.chat.completions.create(
        model=MODEL,
        temperature=0,
        max_tokens=8,
        messages=[
            {"role": "system", "content": LONG_SYSTEM},
            {"role": "user", "content": questions[1]},
        ],
    )
    assert chat.usage is not None and chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens == (len(prompts[1]) - 1) // 128 * 128


def test_previous_response_id_hits_history(server: Server) -> None:
    client = server.client()
    first = client.responses.create(
        model=MODEL, input=LONG_SYSTEM + "Summarize this.", temperature=0, max_output_tokens=16
    )
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input="Now say it in five words.",
        temperature=0,
        max_output_tokens=8,
    )
    history = [
        {"role": "user", "content": LONG_SYSTEM + "Summarize this."},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "Now say it in five words."},
    ]
    prompt = render(history)
    assert second.usage is not None and second.usage.input_tokens == len(prompt)
    first_prompt = render(history[:1])
    assert _cached(second.usage) >= expected_hit(first_prompt, prompt) >= 1024
    again = client.responses.retrieve(second.id)
    assert again.id == second.id and again.output_text == second.output_text


def test_tenants_never_share_hits(server: Server) -> None:
    system = "Tenant isolation check. " + LONG_SYSTEM
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    a, b = server.client("sk-tenant-a"), server.client("sk-tenant-b")

    def cached(client: Any) -> int:
        out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
        return int(out.usage.prompt_tokens_details.cached_tokens)

    assert cached(a) == 0
    assert cached(b) == 0
    assert cached(b) > 0
    assert cached(a) > 0
    # A response stored by tenant A is invisible to tenant B.
    stored = a.responses.create(model=MODEL, input="hello", max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(stored.id)


def test_models_health_metrics(server: Server) -> None:
    models = server.client().models.list()
    assert [m.id for m in models.data] == [MODEL]
    with server.http() as http:
        health = http.get("/health").json()
        assert health["status"] == "ok" and health["model"] == MODEL
        metrics = http.get("/metrics").text
    for name in (
        "promptcache_requests_total",
        "promptcache_cached_tokens_total",
        "promptcache_time_to_first_token_seconds_bucket",
        "promptcache_kv_blocks_in_use",
        "promptcache_cache_hit_rate",
    ):
        assert name in metrics
