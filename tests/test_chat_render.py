"""render_chat: prompt ids identical to the plain render, and exact message-boundary positions.

Uses the bundled SmolLM2 tokenizer (ByteLevel BPE, ChatML template that inserts a default
system prompt when the first message is not a system message).
"""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoTokenizer

from promptcache.model.loading.loader import resolve_model_path
from promptcache.text.chat import MessageSpan, chat_prompt_ids, render_chat

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
UNICODE = "naïve café 日本語 😀"


@pytest.fixture(scope="module")
def tok() -> Any:
    return AutoTokenizer.from_pretrained(resolve_model_path(None))


def joined(content: str | list[str]) -> str:
    return content if isinstance(content, str) else "".join(content)


def chatml(messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """Independent oracle: the ChatML text and each content's [start, end) in characters."""
    text = ""
    if messages[0]["role"] != "system":
        text += f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
    chars = []
    for m in messages:
        text += f"<|im_start|>{m['role']}\n"
        content = joined(m["content"])
        chars.append((len(text), len(text) + len(content)))
        text += content + "<|im_end|>\n"
    return text + "<|im_start|>assistant\n", chars


def old_ids(tok: Any, messages: list[dict[str, Any]]) -> list[int]:
    """What chat_prompt_ids returned before render_chat existed (list contents pre-joined)."""
    plain = [{**m, "content": joined(m["content"])} for m in messages]
    text = tok.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
    return list(tok.backend_tokenizer.encode(text, add_special_tokens=False).ids)


def chatml_ids(tok: Any, messages: list[dict[str, Any]]) -> list[int]:
    return tok.encode(chatml(messages)[0], add_special_tokens=False)


def decode(tok: Any, ids: list[int]) -> str:
    return tok.backend_tokenizer.decode(ids, skip_special_tokens=False)


def offsets(tok: Any, text: str) -> list[tuple[int, int]]:
    return list(tok.backend_tokenizer.encode(text, add_special_tokens=False).offsets)


def assert_round_down(offs: list[tuple[int, int]], c: int, pos: int) -> None:
    """The documented rule: `pos` = number of leading tokens that end at or before `c`."""
    assert all(end <= c for _, end in offs[:pos])
    assert pos == len(offs) or offs[pos][1] > c


CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": ["It is", " 4. Also:", " " + UNICODE]},
    {"role": "user", "content": "What is 2+2?"},  # repeats message 1 verbatim
]


def test_ids_equal_plain_render(tok: Any) -> None:
    convos = [
        CONVERSATION,
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": f"  {UNICODE}\n\n"}, {"role": "assistant", "content": ""}],
    ]
    for messages in convos:
        rendered = render_chat(tok, messages)
        assert rendered.token_ids == chat_prompt_ids(tok, messages) == old_ids(tok, messages)
        assert rendered.token_ids == chatml_ids(tok, messages)
        assert len(rendered.messages) == len(messages)


def test_multi_message_spans_are_exact(tok: Any) -> None:
    rendered = render_chat(tok, CONVERSATION)
    text, chars = chatml(CONVERSATION)
    assert text == tok.apply_chat_template(
        [{**m, "content": joined(m["content"])} for m in CONVERSATION],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = rendered.token_ids
    for i, (span, message, (cs, ce)) in enumerate(
        zip(rendered.messages, CONVERSATION, chars, strict=True)
    ):
        assert span.located
        assert (span.index, span.role) == (i, message["role"])
        assert span.content_start is not None and span.content_end is not None
        assert decode(tok, ids[span.content_start : span.content_end]) == joined(message["content"])
        assert decode(tok, ids[: span.content_start]) == text[:cs]
        assert decode(tok, ids[: span.content_end]) == text[:ce]
        assert ids[span.content_end] == tok.convert_tokens_to_ids("<|im_end|>")
        assert span.part_ends[-1] == span.content_end
    # the repeated content maps to its own, later occurrence
    first, second = rendered.messages[1], rendered.messages[3]
    assert second.content_start is not None and first.content_end is not None
    assert second.content_start > first.content_end
    # multi-part content: each part end is clean here and decodes to the text up to it
    parts_span, (cs, _) = rendered.messages[2], chars[2]
    ends_chars = [
        cs + len("It is"),
        cs + len("It is 4. Also:"),
        cs + len("It is 4. Also: " + UNICODE),
    ]
    assert len(parts_span.part_ends) == 3
    for pos, c in zip(parts_span.part_ends, ends_chars, strict=True):
        assert decode(tok, ids[:pos]) == text[:c]
    # monotonic over the whole prompt
    flat = [
        p
        for s in rendered.messages
        for p in (s.content_start, *s.part_ends, s.content_end)
        if p is not None
    ]
    assert flat == sorted(flat)
    assert flat[-1] < len(ids)


@pytest.mark.parametrize(
    ("parts", "whole"),
    [
        (["hel", "lo world"], "hello world"),  # BPE merges "hello" across the parts
        (["naïve ", "日本語"], "naïve 日本語"),  # " " merges with the first byte of "日"
    ],
)
def test_part_split_mid_token_rounds_down(tok: Any, parts: list[str], whole: str) -> None:
    messages = [{"role": "user", "content": parts}]
    rendered = render_chat(tok, messages)
    text, [(cs, _)] = chatml(messages)
    offs = offsets(tok, text)
    ids = rendered.token_ids
    span = rendered.messages[0]
    assert span.content_start is not None and span.content_end is not None
    cut = cs + len(parts[0])
    pos = span.part_ends[0]
    start, end = offs[pos]
    assert start < cut < end  # the token at the boundary really straddles it
    assert_round_down(offs, cut, pos)  # and belongs to the part in which it ends
    assert decode(tok, ids[:pos]) == text[:start]  # a clean, strictly shorter prefix
    assert span.part_ends[1] == span.content_end
    assert decode(tok, ids[span.content_start : span.content_end]) == whole


def test_content_start_straddling_token_rounds_down(tok: Any) -> None:
    # "\n" after the role and the content's leading space merge into one token
    messages = [{"role": "user", "content": "  spaced"}]
    rendered = render_chat(tok, messages)
    text, [(cs, ce)] = chatml(messages)
    span = rendered.messages[0]
    assert span.content_start is not None and span.content_end is not None
    offs = offsets(tok, text)
    assert offs[span.content_start][0] < cs < offs[span.content_start][1]
    assert_round_down(offs, cs, span.content_start)
    ids = rendered.token_ids
    assert decode(tok, ids[span.content_start : span.content_end]) == "\n  spaced"
    assert decode(tok, ids[: span.content_end]) == text[:ce]


def test_default_system_prompt_inserted(tok: Any) -> None:
    messages = [{"role": "user", "content": "Tell me a joke."}]
    rendered = render_chat(tok, messages)
    text, [(cs, ce)] = chatml(messages)
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}")
    [span] = rendered.messages
    assert span.content_start is not None and span.content_end is not None
    assert decode(tok, rendered.token_ids[: span.content_start]) == text[:cs]
    assert (
        decode(tok, rendered.token_ids[span.content_start : span.content_end])
        == messages[0]["content"]
    )
    assert decode(tok, rendered.token_ids[: span.content_end]) == text[:ce]
    assert span.part_ends == (span.content_end,)


def test_thousand_messages_all_located(tok: Any) -> None:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "ok" if i % 3 else f"m{i} é"}
        for i in range(1000)
    ]
    rendered = render_chat(tok, messages)
    assert rendered.token_ids == old_ids(tok, messages)
    text, chars = chatml(messages)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    previous_end = 0
    for span, message in zip(rendered.messages, messages, strict=True):
        assert span.content_start is not None and span.content_end is not None
        assert previous_end < span.content_start < span.content_end
        ids = rendered.token_ids[span.content_start : span.content_end]
        assert decode(tok, ids) == message["content"]
        assert rendered.token_ids[span.content_end] == im_end
        previous_end = span.content_end
    assert decode(tok, rendered.token_ids[:previous_end]) == text[: chars[-1][1]]


def test_empty_contents(tok: Any) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": []},
        {"role": "user", "content": ["", "x", ""]},
    ]
    rendered = render_chat(tok, messages)
    assert rendered.token_ids == old_ids(tok, messages)
    sys_span, empty, no_parts, parts = rendered.messages
    # an empty content is an empty span where the previous located content ended
    assert empty.content_start == empty.content_end == sys_span.content_end
    assert empty.part_ends == (sys_span.content_end,)
    assert no_parts.content_start == no_parts.content_end == sys_span.content_end
    assert no_parts.part_ends == ()
    assert parts.content_start is not None and parts.content_end is not None
    assert decode(tok, rendered.token_ids[parts.content_start : parts.content_end]) == "x"
    assert parts.part_ends == (parts.content_start, parts.content_end, parts.content_end)


TRIM_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'tool' %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TrimmingTokenizer:
    """The bundled tokenizer behind a template that trims contents and drops tool messages."""

    chat_template = TRIM_TEMPLATE

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.backend_tokenizer = tok.backend_tokenizer

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        return str(self.tok.apply_chat_template(messages, chat_template=TRIM_TEMPLATE, **kwargs))


def test_altered_content_stripped_or_unlocated(tok: Any) -> None:
    trimming = TrimmingTokenizer(tok)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": ["  padded", " text  "]},
        {"role": "tool", "content": "dropped"},
        {"role": "assistant", "content": "kept"},
    ]
    rendered = render_chat(trimming, messages)
    plain = [{**m, "content": joined(m["content"])} for m in messages]
    text = trimming.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>user\npadded text<|im_end|>")
    assert rendered.token_ids == list(tok.backend_tokenizer.encode(text).ids)
    padded, dropped, kept = rendered.messages
    ids = rendered.token_ids
    assert padded.content_start is not None and padded.content_end is not None
    assert decode(tok, ids[padded.content_start : padded.content_end]) == "padded text"
    cut = text.index("padded") + len("padded")  # first part end, shifted by the trimmed lead
    assert decode(tok, ids[: padded.part_ends[0]]) == text[:cut]
    assert padded.part_ends[1] == padded.content_end
    assert dropped == MessageSpan(1, "tool", None, None, ())
    assert not dropped.located
    assert kept.content_start is not None and kept.content_end is not None
    assert decode(tok, ids[kept.content_start : kept.content_end]) == "kept"


class SlowTokenizer:
    """A tokenizer without a Rust backend: template and encode only."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.chat_template = tok.chat_template

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        return str(self.tok.apply_chat_template(messages, **kwargs))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=add_special_tokens))


def test_no_backend_falls_back_without_positions(tok: Any) -> None:
    rendered = render_chat(SlowTokenizer(tok), CONVERSATION)
    assert rendered.token_ids == old_ids(tok, CONVERSATION)
    assert chat_prompt_ids(SlowTokenizer(tok), CONVERSATION) == rendered.token_ids
    assert rendered.messages == tuple(
        MessageSpan(i, m["role"], None, None, ()) for i, m in enumerate(CONVERSATION)
    )


def test_no_chat_template_raises(tok: Any) -> None:
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="no chat template"):
        render_chat(NoTemplate(), [{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt_ids(NoTemplate(), [{"role": "user", "content": "hi"}])
