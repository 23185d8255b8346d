"""`promptcache` command line: `serve` the HTTP API, `generate` one prompt, `bench` an
endpoint, `prewarm` a server's cache, `prepare` a model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from typing import Any

from promptcache.cli.bench import add_bench_parser, run_bench_command
from promptcache.cli.diagnose import (
    add_diagnose_parsers,
    run_diagnose_command,
    run_lint_command,
)
from promptcache.cli.prewarm import add_prewarm_parser, run_prewarm_command
from promptcache.cli.router import (
    add_ray_flags,
    add_router_parser,
    run_router_command,
    run_with_ray,
    run_with_workers,
)
from promptcache.cli.settings import (
    add_config_file_flag,
    add_config_flags,
    build_config,
)
from promptcache.cli.usage import add_usage_parser, run_usage_command
from promptcache.config import EngineConfig, RouterConfig, ServerConfig
from promptcache.model.device import (
    DTYPE_CHOICES,
    WEIGHTS,
    cpu_has_fast_bf16,
    resolve_device,
    resolve_dtype,
)
from promptcache.model.errors import ModelLoadError

log = logging.getLogger("promptcache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptcache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the OpenAI-compatible HTTP API")
    _add_model_flags(serve)
    add_config_file_flag(serve)
    add_config_flags(serve, ServerConfig, "server settings (ServerConfig)")
    add_config_flags(serve, EngineConfig, "engine settings (EngineConfig)")
    serve.add_argument(
        "--workers",
        type=int,
        default=0,
        help="run N engine worker processes behind a router on the public port (the "
        "router's settings below apply); default 0: one engine in this process",
    )
    add_config_flags(serve, RouterConfig, "routing settings with --workers (RouterConfig)")
    add_ray_flags(serve)
    gen = sub.add_parser("generate", help="generate a completion for one prompt")
    _add_model_flags(gen)
    gen.add_argument("--max-tokens", type=int, default=256, help="default: 256")
    gen.add_argument("--temperature", type=float, default=1.0, help="0 = greedy; default: 1.0")
    gen.add_argument("--top-p", type=float, default=1.0, help="default: 1.0")
    gen.add_argument("--seed", type=int, default=None, help="per-request seed")
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--chat", action="store_true", help="wrap PROMPT as a user chat message")
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.add_argument("prompt", metavar="PROMPT")
    add_config_file_flag(gen)
    add_config_flags(gen, EngineConfig, "engine settings (EngineConfig)")
    add_bench_parser(sub)
    add_prewarm_parser(sub)
    prep = sub.add_parser("prepare", help="convert the model once and print its folder")
    _add_model_flags(prep)
    add_usage_parser(sub)
    add_diagnose_parsers(sub)
    add_router_parser(sub, _add_model_flags)
    return parser


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="HF model folder or .gguf file; default: bundled SmolLM2-135M-Instruct",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N; default: auto")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPE_CHOICES,
        help="auto = bfloat16 on CUDA or CPUs with AMX/AVX512-BF16, else float32",
    )
    p.add_argument(
        "--weights",
        default="dense",
        choices=WEIGHTS,
        help="dense = dequantized to --dtype; q4 = a GGUF's own 4-bit blocks (CPU, float32 or "
        "bfloat16; else dense with a warning); default: dense",
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="promptcache: %(message)s", stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prepare":
            return _prepare(args)
        if args.command == "serve" and args.ray:
            return run_with_ray(args)
        if args.command == "serve" and args.workers > 0:
            return run_with_workers(args, argv)
        if args.command == "serve":
            return _serve(args)
        if args.command == "router":
            return run_router_command(args)
        if args.command == "bench":
            return run_bench_command(args)
        if args.command == "prewarm":
            return run_prewarm_command(args)
        if args.command == "usage":
            return run_usage_command(args)
        if args.command == "diagnose":
            return run_diagnose_command(args)
        if args.command == "lint":
            return run_lint_command(args)
        return _generate(args)
    except (ModelLoadError, ValueError) as exc:
        print(f"promptcache: error: {exc}", file=sys.stderr)
        return 2


def _prepare(args: argparse.Namespace) -> int:
    from promptcache.model.loading.loader import resolve_model_path

    print(resolve_model_path(args.model))
    return 0


def _load(args: argparse.Namespace, config: EngineConfig) -> Any:
    from promptcache.engine.host_memory import bound_onednn_caches
    from promptcache.model.loading.loader import load_model

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if device.type == "cpu":
        caps = bound_onednn_caches(config.onednn_cache_capacity)
        log.info("oneDNN kernel caches: %s", ", ".join(f"{k}={v}" for k, v in caps.items()))
    model = load_model(args.model, device=device, dtype=dtype, weights=args.weights)
    why = ""
    if args.dtype == "auto" and device.type == "cpu":
        why = " (auto: CPU has AMX/AVX512-BF16)" if cpu_has_fast_bf16() else " (auto: no fast bf16)"
    log.info(
        "model %s on %s, dtype %s%s, %s weights",
        model.path.name,
        device.type,
        str(dtype).removeprefix("torch."),
        why,
        "4-bit" if model.weights == "q4" else "dense",
    )
    if device.type == "cpu":
        _log_cpu_paths(dtype, model.weights)
    return model


def _log_cpu_paths(dtype: Any, weights: str) -> None:
    """Which kernels this CPU, ISA and dtype get (chosen once, from what the CPU has)."""
    import torch

    from promptcache.model.attention.paged import (
        IN_PLACE_MIN_CONTEXT,
        LONE_IN_PLACE_MAX_CONTEXT,
        matmul_paths,
    )
    from promptcache.model.attention.pool_runs import FLASH_WITH_LSE
    from promptcache.model.kernels import layer_ops
    from promptcache.model.loading.loader import describe_linears

    linears = describe_linears(dtype, weights)
    if matmul_paths(torch.zeros(0, dtype=dtype)):
        attention = "batched matmuls"
    elif dtype == torch.float32:
        attention = (
            f"decode gathered by matmuls or in place from {IN_PLACE_MIN_CONTEXT} keys, else SDPA"
        )
    else:
        attention = "PyTorch SDPA"
    if FLASH_WITH_LSE is not None and dtype in (torch.float32, torch.bfloat16):
        attention += f"; a lone decode up to {LONE_IN_PLACE_MAX_CONTEXT} keys in place (flash)"
    log.info(
        "CPU kernels: %s; linears %s, attention %s, layer steps %s",
        torch.backends.cpu.get_cpu_capability(),
        linears,
        attention,
        layer_ops.describe(dtype, weights),
    )


def _generate(args: argparse.Namespace) -> int:
    from promptcache.engine.llm_engine import LLMEngine
    from promptcache.engine.sampling_params import SamplingParams
    from promptcache.text.chat import chat_prompt_ids

    config = build_config(EngineConfig, args, "engine")
    model = _load(args, config)
    engine = LLMEngine(model, config)
    prompt: str | list[int] = args.prompt
    if args.chat:
        prompt = chat_prompt_ids(model.tokenizer, [{"role": "user", "content": args.prompt}])
    params = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        stop=tuple(args.stop),
    )
    [out] = engine.generate([prompt], params)
    print(json.dumps(out.to_dict()) if args.json else out.text)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from promptcache.api.app import create_app
    from promptcache.api.context import Rendering
    from promptcache.api.limits import Limits
    from promptcache.api.store import ResponseStore
    from promptcache.cli.serving import data_dir_of, keyring, make_books, run_uvicorn
    from promptcache.engine.llm_engine import LLMEngine
    from promptcache.engine.openmp import run_on_temporary_thread
    from promptcache.model.loading.bundled import BUNDLED_MODEL_ID

    server = build_config(ServerConfig, args, "server")
    engine_config = build_config(EngineConfig, args, "engine")
    data_dir = data_dir_of(server)
    if engine_config.disk_cache_dir is None:
        kv_dir = str(data_dir / "kv-cache")
        engine_config = dataclasses.replace(engine_config, disk_cache_dir=kv_dir)
    keys = keyring(server)
    # tensors are built off the main thread: one OpenMP team in the process (engine/openmp.py)
    engine = run_on_temporary_thread(lambda: LLMEngine(_load(args, engine_config), engine_config))
    model = engine.model
    name = server.served_model_name or (BUNDLED_MODEL_ID if args.model is None else model.path.name)
    books = make_books(args, server, name, model.tokenizer, engine.policy)
    store = ResponseStore(data_dir / "responses.sqlite3", server.responses_synchronous)
    app = create_app(
        engine,
        name,
        keys,
        store,
        server.max_queue,
        books=books,
        internal_api_key=server.internal_api_key,
        limits=Limits.of(server),
        rendering=Rendering.of(server, engine_config),
    )
    return run_uvicorn(app, server, f"{name} (responses stored in {data_dir})")


if __name__ == "__main__":
    sys.exit(main())
