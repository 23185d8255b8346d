"""From API messages to the prompt: render with the model's chat template, keeping the token
position where each message and content part ends (`MessageSpan`)."""

from __future__ import annotations

from typing import Any

from promptcache.api.errors import invalid
from promptcache.text.chat import RenderedChat, render_chat


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]]) -> RenderedChat:
    """Chat messages (content: a string or a list of part strings) -> prompt ids and spans.

    The `developer` role is OpenAI's newer name for `system`; templates know `system`.
    Messages are rendered in order, so a stable system prompt and history form the prefix.
    """
    normalized = [
        {"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]}
        for m in messages
    ]
    try:
        return render_chat(tokenizer, normalized)
    except Exception as exc:  # the template refused the conversation (roles, order)
        raise invalid(
            f"the model's chat template cannot render these messages: {exc}", "messages"
        ) from exc
