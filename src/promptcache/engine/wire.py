"""`GenerationRequest` and `RequestOutput` as JSON: what the router sends a worker and the
worker streams back (one output per line), so a remote engine behaves like a local one.

Every field travels; decoding checks types through the dataclasses' own validation and
raises `ValueError` on anything malformed.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from promptcache.cache.settings import Breakpoint, CacheMode, CacheSettings, Retention
from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolChoice, ToolDef
from promptcache.engine.outputs import CacheReport, RequestOutput, TokenLogprob, Usage
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.text.chat import MessageSpan


def request_to_json(r: GenerationRequest) -> dict[str, Any]:
    return {
        "token_ids": r.token_ids,
        "params": asdict(r.params),
        "cache": {
            **asdict(r.cache),
            "retention": r.cache.retention.value,
            "mode": r.cache.mode.value,
            "breakpoints": [[b.position, b.retention.value] for b in r.cache.breakpoints],
        },
        "messages": [asdict(m) for m in r.messages],
        "request_id": r.request_id,
        "endpoint": r.endpoint,
        "api_key_id": r.api_key_id,
        "output": _output_to_json(r.output),
        "choice": r.choice,
        "prefill_only": r.prefill_only,
        "resumed": r.resumed,
    }


def _output_to_json(o: OutputSpec) -> dict[str, Any]:
    return {
        "kind": o.kind.value,
        "schema": o.schema,
        "tools": [[t.name, t.parameters] for t in o.tools],
        "tool_choice": o.tool_choice.value,
        "tool_name": o.tool_name,
        "parallel": o.parallel,
        "tools_shown": o.tools_shown,
        "format_shown": o.format_shown,
    }


def _output_from_json(d: dict[str, Any] | None) -> OutputSpec:
    if d is None:  # from a router of an earlier version
        return OutputSpec()
    return OutputSpec(
        kind=OutputKind(d["kind"]),
        schema=str(d["schema"]),
        tools=tuple(ToolDef(str(n), str(p)) for n, p in d["tools"]),
        tool_choice=ToolChoice(d["tool_choice"]),
        tool_name=None if d["tool_name"] is None else str(d["tool_name"]),
        parallel=bool(d["parallel"]),
        tools_shown=str(d.get("tools_shown", "")),
        format_shown=str(d.get("format_shown", "")),
    )


def request_from_json(d: dict[str, Any]) -> GenerationRequest:
    try:
        p, c = dict(d["params"]), dict(d["cache"])
        params = SamplingParams(
            **{
                **p,
                "stop": tuple(p["stop"]),
                "stop_token_ids": tuple(p["stop_token_ids"]),
                "logit_bias": tuple((int(t), float(b)) for t, b in p.get("logit_bias", ())),
            }
        )
        cache = CacheSettings(
            tenant=c["tenant"],
            retention=Retention(c["retention"]),
            prompt_cache_key=c["prompt_cache_key"],
            mode=CacheMode(c["mode"]),
            breakpoints=tuple(Breakpoint(int(p), Retention(r)) for p, r in c["breakpoints"]),
        )
        spans = tuple(
            MessageSpan(**{**m, "part_ends": tuple(m["part_ends"])}) for m in d["messages"]
        )
        token_ids = [int(t) for t in d["token_ids"]]
        output = _output_from_json(d.get("output"))
        return GenerationRequest(
            token_ids,
            params,
            cache,
            spans,
            d["request_id"],
            d["endpoint"],
            d["api_key_id"],
            output,
            int(d.get("choice", 0)),
            bool(d.get("prefill_only", False)),  # absent from a router of an earlier version
            int(d.get("resumed", 0)),  # absent from a router of an earlier version
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed generation request: {exc!r}") from exc


def output_to_json(o: RequestOutput) -> dict[str, Any]:
    d = asdict(o)
    d["cache"] = asdict(o.cache) if o.cache is not None else None
    return d


_LOGPROB_FIELDS = ("new_logprobs", "logprobs", "prompt_logprobs")


def _logprobs(items: list[dict[str, Any]]) -> list[TokenLogprob]:
    return [
        TokenLogprob(
            int(x["token_id"]), float(x["logprob"]), tuple((int(t), float(v)) for t, v in x["top"])
        )
        for x in items
    ]


def output_from_json(d: dict[str, Any]) -> RequestOutput:
    try:
        cache = CacheReport(**d["cache"]) if d.get("cache") is not None else None
        lists = {k: _logprobs(d.get(k, [])) for k in _LOGPROB_FIELDS}
        return RequestOutput(**{**d, "usage": Usage(**d["usage"]), "cache": cache, **lists})
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed request output: {exc!r}") from exc
