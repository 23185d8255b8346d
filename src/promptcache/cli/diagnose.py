"""`promptcache diagnose` and `promptcache lint`: why a request missed the cache, where two
prompts diverge, and dynamic content early in a prompt or anywhere in a tool list."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from promptcache.cache.policy import CachePolicy
from promptcache.cli.settings import add_config_file_flag, build_config
from promptcache.config import EngineConfig, ServerConfig, default_data_dir
from promptcache.ledger.diagnosis import WINDOW_TOKENS, Diagnosis, common_prefix
from promptcache.ledger.dynamic import changed_kinds, find_dynamic
from promptcache.ledger.store import LEDGER_FILE, read_rows


def add_diagnose_parsers(sub: Any) -> None:
    d = sub.add_parser(
        "diagnose", help="why a request's cached_tokens is what it is, or where two prompts diverge"
    )
    d.add_argument("request_id", nargs="?", default=None, help="a request id from the ledger")
    d.add_argument("--prompts", nargs=2, metavar=("FIRST", "SECOND"), default=None)
    d.add_argument("--json", action="store_true")
    _common(d)
    lint = sub.add_parser("lint", help="flag dynamic content in a prompt's cacheable start")
    lint.add_argument("prompt_file", metavar="PROMPT_FILE", nargs="?", default=None)
    lint.add_argument(
        "--tools",
        dest="tools_file",
        default=None,
        help="a JSON list of tools (OpenAI Chat, Responses or Anthropic shape): flag dynamic "
        "content in their descriptions",
    )
    _common(lint)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", dest="data_dir", default=None, help="the server's data dir")
    p.add_argument("--model", default=None, help="tokenizer's model; default: bundled")
    p.add_argument("--min-prompt-tokens", dest="min_prompt_tokens", type=int, default=None)
    p.add_argument("--increment", type=int, default=None)
    p.add_argument("--block-size", dest="block_size", type=int, default=None)
    add_config_file_flag(p)


def run_diagnose_command(args: argparse.Namespace) -> int:
    if args.prompts:
        return _two_prompts(args)
    if not args.request_id:
        print("promptcache diagnose: give a REQUEST_ID or --prompts A B", file=sys.stderr)
        return 2
    server = build_config(ServerConfig, args, "server")
    data_dir = Path(server.data_dir) if server.data_dir else default_data_dir()
    rows = read_rows(data_dir / LEDGER_FILE, "request_id = ?", [args.request_id])
    if not rows:
        print(
            f"promptcache diagnose: no request {args.request_id!r} in the ledger", file=sys.stderr
        )
        return 1
    row = rows[-1]
    found = Diagnosis.from_json(row.diagnosis) if row.diagnosis else None
    if args.json:
        print(json.dumps({"request_id": row.request_id, "diagnosis": found and found.to_dict()}))
        return 0
    print(f"request {row.request_id} ({row.endpoint}, {row.outcome}, tenant {row.tenant})")
    print(
        f"prompt {row.prompt_tokens} tokens, cached {row.cached_tokens} (reported), "
        f"reused {row.reused_tokens} (physical)"
    )
    if found is None:
        print("no diagnosis: the request produced no usage")
        return 0
    print(f"reason: {found.reason} - {found.summary}")
    if found.reason in ("diverged", "tools_changed", "format_changed"):
        print(f"this prompt:    ...{found.this_text!r}...")
        print(f"earlier prompt: ...{found.earlier_text!r}... ({found.earlier_request_id})")
    return 0


def _two_prompts(args: argparse.Namespace) -> int:
    config = build_config(EngineConfig, args, "engine")
    tok = _tokenizer(args.model)
    a_text, b_text = (Path(p).read_text() for p in args.prompts)
    a, b = (tok.encode(t, add_special_tokens=False) for t in (a_text, b_text))
    k = common_prefix(a, b)
    bs = config.block_size
    reused = min(k // bs * bs, max(0, (len(b) - 1) // bs * bs))
    policy = CachePolicy(True, config.min_prompt_tokens, config.increment)
    reported = policy.reported(reused)
    print(f"first prompt {len(a)} tokens, second {len(b)} tokens; they agree for {k} tokens")
    print(f"sent after the first, the second would reuse {reused} tokens physically and")
    print(f"report cached_tokens {reported} under OpenAI's rules")
    if k < min(len(a), len(b)):
        lo, hi = max(0, k - WINDOW_TOKENS), k + WINDOW_TOKENS
        this, before = tok.decode(b[lo:hi]), tok.decode(a[lo:hi])
        char = len(tok.decode(b[:k]))
        print(f"they diverge at token {k} (character {char}):")
        print(f"  first:  ...{before!r}...")
        print(f"  second: ...{this!r}...")
        kinds = changed_kinds(this, before)
        if kinds:
            print(f"looks dynamic there: {', '.join(kinds)}: move it after the shared part")
    return 0


def run_lint_command(args: argparse.Namespace) -> int:
    """Exit 1 when the prompt's first `min_prompt_tokens` tokens, or any tool's
    description, hold dynamic content."""
    if args.prompt_file is None and args.tools_file is None:
        raise ValueError("lint needs a PROMPT_FILE, --tools FILE, or both")
    found = _lint_tools(args.tools_file) if args.tools_file else 0
    if args.prompt_file is None:
        return 1 if found else 0
    return max(_lint_prompt(args), 1 if found else 0)


def _lint_tools(path: str) -> int:
    """Print each dynamic span in a tool's description (the tools come first in the prompt:
    one that changes ends every request's shared prefix there); how many were found."""
    tools = json.loads(Path(path).read_text())
    if not isinstance(tools, list):
        raise ValueError(f"{path}: expected a JSON list of tools")
    count = 0
    for i, tool in enumerate(tools):
        spec = tool.get("function", tool) if isinstance(tool, dict) else {}
        name = spec.get("name", "?")
        for where, text in _descriptions(spec):
            for f in find_dynamic(text):
                count += 1
                print(f"{path}: tools[{i}] ({name}) {where}: {f.kind} {f.text!r}")
    if count:
        print(
            f"{count} dynamic span(s) in tool descriptions: tools are the start of the "
            "prompt, so they end the shared prefix for every request; keep them fixed"
        )
    else:
        print(f"no dynamic content in the tools of {path}")
    return count


def _descriptions(spec: dict[str, Any], where: str = "description") -> list[tuple[str, str]]:
    """The tool's description and its parameters' (nested), with where each is."""
    out = []
    if isinstance(spec.get("description"), str):
        out.append((where, spec["description"]))
    schema = spec.get("parameters", spec.get("input_schema"))
    for key, prop in _properties(schema, "parameters"):
        if isinstance(prop.get("description"), str):
            out.append((f"{key}.description", prop["description"]))
    return out


def _properties(schema: Any, at: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return []
    out = []
    for name, prop in schema["properties"].items():
        if isinstance(prop, dict):
            out.append((f"{at}.{name}", prop))
            out += _properties(prop, f"{at}.{name}")
    return out


def _lint_prompt(args: argparse.Namespace) -> int:
    config = build_config(EngineConfig, args, "engine")
    tok = _tokenizer(args.model)
    text = Path(args.prompt_file).read_text()
    ids = tok.encode(text, add_special_tokens=False)
    head = tok.decode(ids[: config.min_prompt_tokens])
    findings = find_dynamic(head)
    for f in findings:
        line = head.count("\n", 0, f.start) + 1
        print(f"{args.prompt_file}:{line}: {f.kind} {f.text!r} at character {f.start}")
    if findings:
        print(
            f"{len(findings)} dynamic span(s) in the first {config.min_prompt_tokens} tokens: "
            "they change from request to request and end the shared prefix there; "
            "move them to the end of the prompt"
        )
        return 1
    print(f"no dynamic content in the first {config.min_prompt_tokens} tokens")
    return 0


def _tokenizer(model: str | None) -> Any:
    from transformers import AutoTokenizer

    from promptcache.model.loading.loader import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(model))
