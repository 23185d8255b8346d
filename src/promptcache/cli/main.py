"""`promptcache` command line: `generate` runs one prompt, `prepare` converts the model."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from promptcache.cli.settings import add_engine_flags, engine_config_from_args
from promptcache.model.device import DTYPE_CHOICES, cpu_has_fast_bf16, resolve_device, resolve_dtype
from promptcache.model.errors import ModelLoadError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptcache", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
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
    add_engine_flags(gen)
    prep = sub.add_parser("prepare", help="convert the model once and print its folder")
    _add_model_flags(prep)
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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="promptcache: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "prepare":
            return _prepare(args)
        return _generate(args)
    except (ModelLoadError, ValueError) as exc:
        print(f"promptcache: error: {exc}", file=sys.stderr)
        return 2


def _prepare(args: argparse.Namespace) -> int:
    from promptcache.model.loader import resolve_model_path

    print(resolve_model_path(args.model))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from promptcache.engine.llm_engine import LLMEngine
    from promptcache.engine.sampling_params import SamplingParams
    from promptcache.model.chat import chat_prompt_ids
    from promptcache.model.loader import load_model

    config = engine_config_from_args(args)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model = load_model(args.model, device=device, dtype=dtype)
    _announce(model.path.name, device.type, str(dtype).removeprefix("torch."), args.dtype)
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


def _announce(name: str, device: str, dtype: str, requested: str) -> None:
    why = ""
    if requested == "auto" and device == "cpu":
        why = " (auto: CPU has AMX/AVX512-BF16)" if cpu_has_fast_bf16() else " (auto: no fast bf16)"
    logging.getLogger("promptcache").info("model %s on %s, dtype %s%s", name, device, dtype, why)


if __name__ == "__main__":
    sys.exit(main())
