"""Render chat messages to prompt token ids with the model's own chat template.

Besides the ids, `render_chat` reports where each message's content (and each content part)
lies in those ids, so that cache breakpoints and cache-miss diagnosis can name exact token
positions. The template is rendered once and the text encoded once; message contents are
then located in the rendered text with a forward-moving cursor and mapped to token
positions through the encoding's character offsets, all in time linear in the prompt.

Boundary rule: a character position `c` maps to the number of leading tokens that end at or
before `c` (a token belongs to the segment in which it ends). When BPE merges text across `c`
(e.g. a content part split mid-word), the boundary is rounded down, to just before the
straddling token; `ids[:pos(c)]` then never covers text past `c`. Content starts, content
ends and part ends all follow this one rule, so consecutive spans tile without gaps; a span
may thus begin with template text merged into its first token (ByteLevel BPE joins a "\n"
with the content's leading spaces) and lose trailing text merged into the next token.

Contents are matched as text: a content that also occurs in the template's own text between
the cursor and the content (e.g. "user", or words of a default system prompt) is located at
that earlier occurrence. Later messages are unaffected, as the cursor never passes the truth.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any


@dataclass(frozen=True, slots=True)
class MessageSpan:
    """Where one rendered message's content lies in the prompt's token ids.

    Positions follow the module's boundary rule (rounded down on a straddling token).
    `part_ends` has one entry per content part (one for a `str` content). A message whose
    content the template did not reproduce verbatim (nor stripped) is left unlocated:
    `content_start`/`content_end` are None and `part_ends` is empty. An empty content is
    located as an empty span at the end of the previous located content (or the text start).
    """

    index: int
    role: str
    content_start: int | None
    content_end: int | None
    part_ends: tuple[int, ...]

    @property
    def located(self) -> bool:
        """Whether this message's content was found in the rendered text."""
        return self.content_end is not None


@dataclass(frozen=True, slots=True)
class RenderedChat:
    """A chat rendered for a reply: its prompt token ids and each message's content span;
    `tools_end`, where a renderer put the tools before the messages, is where they end."""

    token_ids: list[int]
    messages: tuple[MessageSpan, ...]
    tools_end: int | None = None


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of `messages` rendered by the tokenizer's template, ready for a reply."""
    return render_chat(tokenizer, messages).token_ids


def render_chat(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    replays: Mapping[int, Sequence[int]] | None = None,
) -> RenderedChat:
    """Render `messages` with the chat template (ready for a reply) and locate each content.

    A message's "content" is a `str` or a `list[str]` of parts, which the template receives
    joined with "". Other keys pass to the template unchanged, and so do `tools` (for a
    template that takes them). Raises ValueError when the tokenizer has no chat template.
    Tokenizers without a Rust backend give unlocated spans.

    `replays` maps a message's index to the token ids the model produced for exactly its
    content: where the template reproduced that content verbatim, those ids stand in for
    its encoding (the text on either side is encoded apart from them), so an earlier answer
    renders to the tokens that were generated, which the cache holds, even where the model
    wrote its text in other tokens than the tokenizer would.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this model has no chat template; send a plain prompt instead")
    parts = [_content_parts(m.get("content")) for m in messages]
    extra = {"tools": tools} if tools else {}
    text = tokenizer.apply_chat_template(
        _joined_messages(messages, parts), add_generation_prompt=True, tokenize=False, **extra
    )
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # no character offsets to map through
        ids = list(tokenizer.encode(text, add_special_tokens=False))
        return RenderedChat(ids, tuple(_unlocated(i, m) for i, m in enumerate(messages)))
    located = _locate_all(text, parts)
    cuts = [
        (found[0], found[1], replays[i])
        for i, found in enumerate(located)
        if replays and i in replays and found is not None and found[2] == 0
    ]
    ids, token_ends = _encode(backend, text, cuts)
    return RenderedChat(ids, _message_spans(messages, parts, located, token_ends))


def _encode(
    backend: Any, text: str, cuts: list[tuple[int, int, Sequence[int]]]
) -> tuple[list[int], list[int]]:
    """The ids of `text` and each one's end character (non-decreasing), with each cut's
    characters [start, end) replaced by its ids (all ending at `end`)."""
    ids: list[int] = []
    ends: list[int] = []
    at = 0
    for start, end, replay in [*cuts, (len(text), len(text), ())]:
        if start > at or start == len(text):
            # the Rust tokenizer: same ids as the Python one, ~25 % less time
            encoding = backend.encode(text[at:start], add_special_tokens=False)
            ids.extend(encoding.ids)
            ends.extend(at + e for e in _token_ends(encoding.offsets))
        ids.extend(replay)
        ends.extend([end] * len(replay))
        at = end
    return ids, ends


def _locate_all(text: str, parts: list[list[str] | None]) -> list[tuple[int, int, int] | None]:
    """Each message's content in `text`, in order (see `_locate`); None where not found."""
    out: list[tuple[int, int, int] | None] = []
    cursor = 0
    for message_parts in parts:
        found = None if message_parts is None else _locate(text, "".join(message_parts), cursor)
        if found is not None:  # else the cursor stays for the next message
            cursor = found[1]
        out.append(found)
    return out


def _token_ends(offsets: list[tuple[int, int]]) -> list[int]:
    """Each token's end character offset, made non-decreasing so that it can be bisected.

    `bisect_right(ends, c)` is then the number of leading tokens ending at or before `c`.
    ByteLevel BPE gives sorted ends already (every byte token of a multi-byte character
    carries that character's full span); the running max guards other tokenizers.
    """
    ends = [end for _, end in offsets]
    if ends != sorted(ends):  # a C-speed check; the running max is a Python-speed loop
        ends = list(accumulate(ends, max))
    return ends


def _message_spans(
    messages: list[dict[str, Any]],
    parts: list[list[str] | None],
    located: list[tuple[int, int, int] | None],
    token_ends: list[int],
) -> tuple[MessageSpan, ...]:
    """Each located message's content mapped to token positions."""
    spans = []
    for i, (message, message_parts, found) in enumerate(zip(messages, parts, located, strict=True)):
        if message_parts is None or found is None:
            spans.append(_unlocated(i, message))
            continue
        start, end, lead = found
        content_end = bisect_right(token_ends, end)
        if len(message_parts) == 1:  # the common case: the one part ends with the content
            part_ends: tuple[int, ...] = (content_end,)
        else:
            part_chars = _part_ends(message_parts, start - lead, start, end)
            part_ends = tuple(bisect_right(token_ends, c) for c in part_chars)
        role = message.get("role", "")
        spans.append(MessageSpan(i, role, bisect_right(token_ends, start), content_end, part_ends))
    return tuple(spans)


def _content_parts(content: Any) -> list[str] | None:
    """The content's parts (a `str` is one part); None for anything we cannot locate."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list) and all(isinstance(p, str) for p in content):
        return content
    return None


def _joined_messages(
    messages: list[dict[str, Any]], parts: list[list[str] | None]
) -> list[dict[str, Any]]:
    """The messages as the template sees them: list contents joined into one string."""
    return [
        {**m, "content": "".join(p)} if isinstance(m.get("content"), list) and p is not None else m
        for m, p in zip(messages, parts, strict=True)
    ]


def _locate(text: str, content: str, cursor: int) -> tuple[int, int, int] | None:
    """Find `content` in `text` at or after `cursor`, verbatim, else stripped.

    Returns the match's [start, end) in characters and how many leading characters of
    `content` the match dropped (0 when verbatim); None when neither form occurs. The first
    occurrence wins. A content found near the cursor costs little; one not found at all
    costs a scan of the rest of the text.
    """
    start = text.find(content, cursor)
    if start >= 0:
        return start, start + len(content), 0
    stripped = content.strip()
    if stripped == content:
        return None
    start = text.find(stripped, cursor)
    if start < 0:
        return None
    return start, start + len(stripped), len(content) - len(content.lstrip())


def _part_ends(parts: list[str], origin: int, start: int, end: int) -> list[int]:
    """Each part's end character, counted from `origin`, clamped into the match [start, end).

    `origin` is where the unstripped content would begin, so the parts of a stripped match
    keep their places and whitespace-only parts at its edges collapse onto its ends.
    """
    ends = []
    for part in parts:
        origin += len(part)
        ends.append(min(max(origin, start), end))
    return ends


def _unlocated(index: int, message: dict[str, Any]) -> MessageSpan:
    """A span for a message whose content was not located."""
    return MessageSpan(index, message.get("role", ""), None, None, ())
