"""Why a request's `cached_tokens` is what it is: the miss diagnosis.

Inputs: the request's prompt and message spans, its usage, the cache's report (the longest
cached run, whether the block after it was evicted lately, steps waited), the usage rules,
and this tenant's recent prompts (`PromptHistory`, in memory, per tenant). Never another
tenant's: the history is keyed by tenant and the cache's chains are salted by it.

Reasons, first that applies:
    disabled        prefix caching is off
    not_read        the request asked for its prompt's logprobs (Completions' echo with
                    logprobs): every prompt token was computed, none read (it was written)
    below_minimum   the prompt is shorter than min_prompt_tokens: reported as 0 (OpenAI's
                    rules), whatever was reused physically
    breakpoint      the reuse is an explicit breakpoint's prefix, to the token; what follows
                    it was computed
    no_breakpoint   explicit mode (only breakpoints are cached and matched) and none of this
                    tenant's latest breakpoints starts the prompt
    hit             everything reusable was reused and reported (the whole prompt, or all it
                    shared with an earlier prompt up to its last message, the new input)
    rounded         as `hit`, but the report is rounded down to the increment
    waited          a hit, after waiting for a request in flight that computed the prefix
    expired         the prefix went on in the cache, but its next block's retention ran out
    evicted         the prefix went on in the cache, but its next block was evicted for room
    other_worker    behind the router: the closest earlier prompt of this tenant, whose
                    prefix this one shares, ran on another worker (overflow, balance, or
                    failover sent this one elsewhere), whose cache holds that prefix
    no_prefix       nothing of this tenant's matched the prompt's start (no earlier prompt
                    of this tenant is remembered, or none shares even its first token)
    tools_changed   as `diverged`, before the first message, and the two requests' tools
                    as shown (descriptions included) differ: the tools, rendered first,
                    changed
    format_changed  as `diverged`, before the first message, the same tools, and the two
                    requests' answer formats as shown (kind, schema, name, description)
                    differ: the format, rendered after the tools and before the system
                    prompt, changed
    diverged        the closest earlier prompt of this tenant agreed up to token K, then the
                    two differ: the message, a text window around K in both, and what looks
                    dynamic there (a timestamp, date, UUID, counter, random id)
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from promptcache.cache.policy import CachePolicy, UsageRules
from promptcache.engine.lifecycle import RequestRecord
from promptcache.engine.outputs import CacheReport
from promptcache.ledger.dynamic import changed_kinds
from promptcache.text.chat import MessageSpan

WINDOW_TOKENS = 24  # tokens of text shown on each side of a divergence
MAX_TENANTS = 1024  # tenants whose recent prompts are remembered (least recent dropped)


@dataclass(frozen=True, slots=True)
class Rules:
    """The cache's rules the diagnosis explains: the engine's policy and block size."""

    policy: CachePolicy
    block_size: int


@dataclass(frozen=True, slots=True)
class Diagnosis:
    reason: str
    summary: str
    prompt_tokens: int
    cached_tokens: int
    reused_tokens: int
    matched_tokens: int
    diverged_at: int | None = None  # token position where it left the closest earlier prompt
    earlier_request_id: str | None = None
    message_index: int | None = None  # the message holding that position
    message_role: str | None = None
    this_text: str | None = None  # text around the divergence, this prompt
    earlier_text: str | None = None  # ... and the earlier one
    dynamic: tuple[str, ...] = ()
    evicted_at: float | None = None
    waited_steps: int = 0
    worker: str | None = None  # behind the router: the worker that ran this request
    earlier_worker: str | None = None  # ... and the closest earlier prompt's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Diagnosis:
        data = json.loads(text)
        data["dynamic"] = tuple(data.get("dynamic", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class _Prompt:
    request_id: str | None
    token_ids: list[int]
    worker: str | None = None
    tools: str = ""  # the request's tools digest (`OutputSpec.tools_digest`)
    format: str = ""  # ... and its format digest (`OutputSpec.format_digest`)


class PromptHistory:
    """Each tenant's most recent prompts (`per_tenant` of them), for `diverged`."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._tenants: OrderedDict[str | None, deque[_Prompt]] = OrderedDict()

    def closest(self, tenant: str | None, token_ids: list[int]) -> tuple[_Prompt | None, int]:
        """The remembered prompt of `tenant` sharing the longest token prefix, and its length."""
        best, best_len = None, 0
        for p in self._tenants.get(tenant, ()):
            n = common_prefix(p.token_ids, token_ids)
            if best is None or n > best_len:
                best, best_len = p, n
        return best, best_len

    def add(
        self,
        tenant: str | None,
        request_id: str | None,
        token_ids: list[int],
        worker: str | None = None,
        tools: str = "",
        format: str = "",
    ) -> None:
        if self.per_tenant <= 0:
            return
        prompts = self._tenants.pop(tenant, None) or deque(maxlen=self.per_tenant)
        prompts.append(_Prompt(request_id, token_ids, worker, tools, format))
        self._tenants[tenant] = prompts
        while len(self._tenants) > MAX_TENANTS:
            self._tenants.popitem(last=False)


_CHUNK = 256  # tokens compared per C-speed slice compare


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix: whole chunks compared as slices (linear in the
    answer), then a binary search inside the first chunk that differs."""
    n = min(len(a), len(b))
    lo = 0
    while lo + _CHUNK <= n and a[lo : lo + _CHUNK] == b[lo : lo + _CHUNK]:
        lo += _CHUNK
    base, hi = lo, min(lo + _CHUNK, n)  # a[:base] == b[:base] is known
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[base:mid] == b[base:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


Decode = Callable[[list[int]], str]


def diagnose(
    record: RequestRecord, rules: Rules, history: PromptHistory, decode: Decode
) -> Diagnosis | None:
    """The diagnosis of a request that ran (None for one rejected before any output)."""
    u, report = record.usage, record.cache
    if u is None or report is None:
        return None
    base = {
        "prompt_tokens": u.prompt_tokens,
        "cached_tokens": u.cached_tokens,
        "reused_tokens": u.reused_tokens,
        "matched_tokens": report.matched_tokens,
        "waited_steps": report.waited_steps,
    }
    found = _first_reason(record, rules, history, decode, base)
    if found.reason in ("hit", "rounded") and report.waited_steps:
        summary = (
            f"reused {u.reused_tokens} tokens (reported {u.cached_tokens}) after waiting "
            f"{report.waited_steps} step(s) for a request in flight that computed the prefix"
        )
        return replace(found, reason="waited", summary=summary)
    return found


def _first_reason(
    record: RequestRecord,
    rules: Rules,
    history: PromptHistory,
    decode: Decode,
    base: dict[str, int],
) -> Diagnosis:
    assert record.usage is not None and record.cache is not None
    u, report, tokens = record.usage, record.cache, record.request.token_ids
    reason, summary = None, ""
    if rules.policy.enabled and report.reason == "not_read":
        reason, summary = (
            "not_read",
            (
                "the request asked for its prompt's logprobs (echo with logprobs), so every "
                "prompt token was computed and none read from the cache; its blocks were written"
            ),
        )
    elif rules.policy.enabled:
        reason, summary = _explicit_reason(report, u.reused_tokens)
    if reason is None:
        reason, summary = _simple_reason(rules, u.prompt_tokens, u.cached_tokens, u.reused_tokens)
    if reason is not None:
        return Diagnosis(reason, summary, **base)  # type: ignore[arg-type]
    if report.evicted_at is not None and report.evicted_expired:
        summary = (
            f"reused {u.reused_tokens} tokens; the cached prefix went on but its next block's "
            f"retention ({report.evicted_retention}) ran out"
        )
        return Diagnosis("expired", summary, evicted_at=report.evicted_at, **base)  # type: ignore[arg-type]
    if report.evicted_at is not None:
        summary = (
            f"reused {u.reused_tokens} tokens; the cached prefix went on but its next block "
            f"({report.evicted_retention}) was evicted for room"
        )
        return Diagnosis("evicted", summary, evicted_at=report.evicted_at, **base)  # type: ignore[arg-type]
    earlier, k = history.closest(record.request.cache.tenant, tokens)
    if earlier is None or k == 0:
        summary = "nothing of this tenant's earlier prompts matched the prompt's start"
        return Diagnosis("no_prefix", summary, **base)  # type: ignore[arg-type]
    whole_blocks = k // rules.block_size * rules.block_size
    moved = earlier.worker is not None and record.worker not in (None, earlier.worker)
    if moved and u.reused_tokens < whole_blocks:
        return _other_worker(record, earlier, k, base)
    messages, output = record.request.messages, record.request.output
    span = span_at(messages, k)
    now = (output.tools_digest(), output.format_digest())
    preamble = preamble_change(messages, k, (earlier.tools, earlier.format), now)
    all_reused = u.reused_tokens >= whole_blocks
    last = span is not None and span is messages[-1] and not before_messages(messages, k)
    if last and all_reused:
        assert span is not None
        return _new_input(span, earlier, k, rules, base)
    found = _diverged(span, tokens, earlier, k, decode, base)
    if preamble is None:
        return found
    return replace(found, reason=preamble, summary=_PREAMBLE_SUMMARY[preamble].format(k=k))


_PREAMBLE_SUMMARY = {
    "tools_changed": (
        "this prompt left the closest earlier prompt of this tenant at token {k}, in the "
        "tools, which come first in the prompt: their definitions changed (keep one "
        "tool list per agent; the order of keys does not matter)"
    ),
    "format_changed": (
        "this prompt left the closest earlier prompt of this tenant at token {k}, in the "
        "answer's format (response_format, text.format, output_config.format), shown "
        "after the tools and before the system prompt: it changed (keep one format per "
        "kind of request; the order of a schema's keys does not matter)"
    ),
}


def before_messages(messages: tuple[MessageSpan, ...], k: int) -> bool:
    """Whether token `k` lies before the first message: in the tools or the format."""
    first = messages[0].content_start if messages else None
    return first is not None and k < first


def preamble_change(
    messages: tuple[MessageSpan, ...], k: int, earlier: tuple[str, str], now: tuple[str, str]
) -> str | None:
    """`tools_changed` or `format_changed` when two prompts diverge at `k` before the first
    message and their (tools, format) digests (`OutputSpec.tools_digest`, `.format_digest`)
    differ there, tools first; None otherwise."""
    if not before_messages(messages, k):
        return None
    if earlier[0] != now[0]:
        return "tools_changed"
    if earlier[1] != now[1]:
        return "format_changed"
    return None


def _other_worker(
    record: RequestRecord, earlier: _Prompt, k: int, base: dict[str, int]
) -> Diagnosis:
    summary = (
        f"shared {k} tokens with an earlier prompt (request {earlier.request_id}), which ran "
        f"on worker {earlier.worker}; this one ran on {record.worker}, which had "
        f"{base['reused_tokens']} of them cached (the router spread the prefix: overflow, "
        "balance or failover)"
    )
    return Diagnosis(
        "other_worker",
        summary,
        diverged_at=k,
        earlier_request_id=earlier.request_id,
        worker=record.worker,
        earlier_worker=earlier.worker,
        **base,  # type: ignore[arg-type]
    )


def span_at(messages: tuple[MessageSpan, ...], k: int) -> MessageSpan | None:
    """The message whose content holds token position `k` (or the first one after it)."""
    return next((m for m in messages if m.content_end is not None and m.content_end > k), None)


def _new_input(
    span: MessageSpan, earlier: _Prompt, k: int, rules: Rules, base: dict[str, int]
) -> Diagnosis:
    """The prompt shared everything with an earlier one up to its last message (the new
    input): the cache reused all of that it could, in whole blocks."""
    reused, cached = base["reused_tokens"], base["cached_tokens"]
    reason = "rounded" if cached < reused else "hit"
    how = f", reported {cached} (rounded down to the {rules.policy.increment}-token increment)"
    summary = (
        f"shared {k} tokens with an earlier prompt, up to the new input (message "
        f"{span.index}, {span.role}); reused all of it in whole blocks: {reused} tokens"
        f"{how if reason == 'rounded' else ''}"
    )
    return Diagnosis(
        reason,
        summary,
        diverged_at=k,
        earlier_request_id=earlier.request_id,
        message_index=span.index,
        message_role=span.role,
        **base,  # type: ignore[arg-type]
    )


def _explicit_reason(report: CacheReport, reused: int) -> tuple[str | None, str]:
    """Reasons of explicit breakpoints: a hit that is a breakpoint's prefix, or an explicit
    request that matched none."""
    if report.breakpoint_tokens and reused == report.breakpoint_tokens:
        return "breakpoint", (
            f"reused the {reused}-token prefix of an explicit breakpoint, to the token; the "
            "rest of the prompt was computed"
        )
    if report.mode == "explicit" and reused == 0:
        marks = "its own breakpoints" if report.breakpoints else "no breakpoint"
        return "no_breakpoint", (
            "explicit mode caches and matches only breakpoints, and none of this tenant's "
            f"latest 80 starts this prompt (the request carried {marks}; mark the end of the "
            "stable prefix with prompt_cache_breakpoint or cache_control)"
        )
    return None, ""


def _simple_reason(rules: Rules, prompt: int, cached: int, reused: int) -> tuple[str | None, str]:
    policy = rules.policy
    if not policy.enabled:
        return "disabled", "prefix caching is off on this server"
    if policy.rules is UsageRules.OPENAI and prompt < policy.min_prompt_tokens:
        return "below_minimum", (
            f"the prompt has {prompt} tokens, under the {policy.min_prompt_tokens}-token minimum: "
            f"cached_tokens is reported as 0 (reused physically: {reused})"
        )
    reusable = (prompt - 1) // rules.block_size * rules.block_size
    if reused < reusable:
        return None, ""
    if cached < reused:
        return "rounded", (
            f"reused {reused} tokens; reported {cached}, rounded down to the "
            f"{policy.increment}-token increment"
        )
    return "hit", f"reused every reusable token ({reused}; the last prompt token is computed)"


def _diverged(
    span: MessageSpan | None,
    tokens: list[int],
    earlier: _Prompt,
    k: int,
    decode: Decode,
    base: dict[str, int],
) -> Diagnosis:
    this_text = decode(tokens[max(0, k - WINDOW_TOKENS) : k + WINDOW_TOKENS])
    earlier_text = decode(earlier.token_ids[max(0, k - WINDOW_TOKENS) : k + WINDOW_TOKENS])
    dynamic = tuple(changed_kinds(this_text, earlier_text))
    where = f" in message {span.index} ({span.role})" if span else ""
    hint = f"; looks dynamic there: {', '.join(dynamic)}" if dynamic else ""
    summary = (
        f"this prompt left the closest earlier prompt of this tenant at token {k}{where}"
        f"{hint}: keep content that changes at the end of the prompt"
    )
    return Diagnosis(
        "diverged",
        summary,
        diverged_at=k,
        earlier_request_id=earlier.request_id,
        message_index=span.index if span else None,
        message_role=span.role if span else None,
        this_text=this_text,
        earlier_text=earlier_text,
        dynamic=dynamic,
        **base,  # type: ignore[arg-type]
    )
