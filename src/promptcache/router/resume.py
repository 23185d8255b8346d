"""Streams that survive a worker: what the router keeps of a request's relayed output, so
that when its worker dies mid-stream another worker can continue it exactly.

The continuation is the same request with the output so far appended to its prompt and
`resumed` saying how many of those tokens are earlier output (the engine then counts them
as output for penalties, the grammar and the text, and a seeded sampler skips their
draws); its `max_tokens` shrinks by what was generated. The continuation's outputs are
rewritten into the original request's terms (`Progress.merge`): its text already holds the
earlier output (the engine decodes the resumed tokens first), so the client's text goes on
where it stopped; `token_ids` and `logprobs` gain the earlier output; usage reports the
original prompt and every generated token.

Usage of a continued request: `prompt_tokens` is the original prompt; the prompt-side
figures (`cached_tokens`, `cache_write_tokens`, `reused_tokens`, `written_tokens`) are the
first worker's, from its last relayed output, since the client's prompt was admitted once
(the continuation's prefill of prompt plus earlier output is the service's cost, not the
client's); `completion_tokens` counts every generated token, before and after the failure.

Knows nothing of HTTP or workers: `remote.RemoteStream` drives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from promptcache.engine.errors import EngineDead
from promptcache.engine.outputs import RequestOutput, TokenLogprob, Usage
from promptcache.engine.request import GenerationRequest


@dataclass(slots=True)
class Progress:
    """What the client has been sent of one request, across the workers that ran it."""

    request: GenerationRequest
    token_ids: list[int] = field(default_factory=list)  # every output token relayed
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: str = ""  # the text so far, as relayed
    usage: Usage | None = None  # the first worker's last usage (its prompt side stays)
    ttft_s: float | None = None
    resumed_at: int = 0  # output tokens generated before the worker now running it

    def record(self, out: RequestOutput) -> None:
        """Note an output as relayed to the client (after `merge`)."""
        self.token_ids.extend(out.new_token_ids)
        self.logprobs.extend(out.new_logprobs)
        self.text = out.text
        if self.usage is None or not self.resumed_at:
            self.usage = out.usage
        if self.ttft_s is None:
            self.ttft_s = out.ttft_s

    def continuation(self) -> GenerationRequest | None:
        """The request that continues from the output so far; None when it cannot be
        rebuilt (nothing was output yet, or nothing is left to generate)."""
        done = len(self.token_ids)
        p = self.request.params
        if not done or (p.max_tokens is not None and p.max_tokens <= done):
            return None
        self.resumed_at = done
        max_tokens = None if p.max_tokens is None else p.max_tokens - done
        return replace(
            self.request,
            token_ids=self.request.token_ids + self.token_ids,
            params=replace(p, max_tokens=max_tokens),
            resumed=self.request.resumed + done,
        )

    def merge(self, out: RequestOutput) -> RequestOutput:
        """A continuation's output in the original request's terms (unchanged before any
        failure)."""
        done = self.resumed_at  # the continuation's own final lists start after these
        if not done:
            return out
        return replace(
            out,
            text=self._text(out.text),
            usage=self._usage(out.usage),
            ttft_s=self.ttft_s,
            token_ids=self.token_ids[:done] + out.token_ids if out.finished else [],
            logprobs=self.logprobs[:done] + out.logprobs if out.finished else [],
            prompt_logprobs=out.prompt_logprobs[: max(len(self.request.token_ids) - 1, 0)],
        )

    def _text(self, text: str) -> str:
        if not text.startswith(self.text):  # the engine decodes the resumed tokens first
            raise EngineDead("the continuation's text does not extend the text relayed")
        return text

    def _usage(self, u: Usage) -> Usage:
        first = self.usage
        assert first is not None  # set by the first relayed output
        return replace(
            first,
            prompt_tokens=len(self.request.token_ids),
            completion_tokens=self.resumed_at + u.completion_tokens,
        )
