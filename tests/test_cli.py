"""`promptcache generate --json` on the bundled model, run as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_generate_json() -> None:
    cmd = [
        sys.executable,
        "-m",
        "promptcache.cli.main",
        "generate",
        "--chat",
        "--json",
        "--dtype",
        "float32",
        "--temperature",
        "0",
        "--max-tokens",
        "20",
        "--kv-cache-bytes",
        "64MiB",
        "What is the capital of France?",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    out = json.loads(done.stdout)
    keys = {"text", "token_ids", "finish_reason", "usage", "cache", "ttft_s", "total_s"}
    assert set(out) == keys
    assert out["text"] == "The capital of France is Paris."
    assert out["finish_reason"] == "stop"
    assert out["usage"] == {
        "prompt_tokens": 37,
        "cached_tokens": 0,
        "cache_write_tokens": 0,  # under OpenAI's rules: a 37-token prompt is not cached
        "completion_tokens": len(out["token_ids"]),
        "reused_tokens": 0,
        "written_tokens": 32,  # physically, its two full blocks are
    }
    assert out["cache"] == {
        "tenant": None,
        "retention": "in_memory",
        "prompt_cache_key": None,
        "matched_tokens": 0,
        "reason": "not_found",
        "waited_steps": 0,
        "evicted_at": None,
        "evicted_retention": None,
        "evicted_expired": False,
        "reused_from_host": 0,
        "reused_from_disk": 0,
        "mode": "implicit",
        "breakpoints": 0,
        "breakpoint_tokens": 0,
    }
    assert 0 < out["ttft_s"] <= out["total_s"]
    assert "dtype float32" in done.stderr


def test_bad_model_is_a_clear_error() -> None:
    cmd = [sys.executable, "-m", "promptcache.cli.main", "generate", "--model", "/nope", "hi"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "error: model '/nope' not found" in done.stderr


def test_worker_key_starting_with_a_dash_is_one_argument(tmp_path: Path) -> None:
    """`serve --workers` hands each worker a random key (token_urlsafe), which may begin
    with "-"; the worker's parser must still read it as the key."""
    from promptcache.cli.main import build_parser
    from promptcache.cli.router import worker_args

    argv = ["serve", "--workers", "2", "--dtype", "float32"]
    args = build_parser().parse_args(worker_args(argv, 8001, "-Ab_c", tmp_path))
    assert args.internal_api_key == "-Ab_c"
    assert (args.port, args.data_dir, args.workers) == (8001, str(tmp_path), 0)


def test_workers_leave_the_start_up_prewarm_to_the_router(tmp_path: Path) -> None:
    from promptcache.cli.main import build_parser
    from promptcache.cli.router import worker_args

    argv = ["serve", "--workers", "2", "--prewarm-file", "p.jsonl"]
    assert build_parser().parse_args(argv).prewarm_file == "p.jsonl"
    args = build_parser().parse_args(worker_args(argv, 8001, "k", tmp_path))
    assert args.prewarm_file == ""  # a worker sends none (the router sends them)
