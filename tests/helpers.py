"""Plain helpers the tests share (fixtures live in conftest.py): tiny random-weight models of
each architecture, seeded token ids, running an engine to the end, transformers' logits,
and Triton's interpreter for the modules that run the kernel off a GPU."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from promptcache.engine.llm_engine import LLMEngine
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.request import GenerationRequest

TINY = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    rms_norm_eps=1e-6,
    eos_token_id=None,
    initializer_range=0.2,  # large enough that attention and MLP move the logits
)

# How far our float32 logits may be from transformers' on the same weights: float32
# rounding over 30 layers in other summation orders (1.04e-4 seen with AVX2 kernels).
TOL = 2e-4


def tiny_hf_config(arch: str, **overrides: Any) -> Any:
    """A small transformers config of `arch` (llama, mistral, qwen2, qwen3)."""
    import transformers

    cls = {
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
        "qwen3": transformers.Qwen3Config,
    }[arch]
    kwargs = {**TINY, **overrides}
    if arch == "qwen3":
        kwargs.setdefault("head_dim", 16)
    return cls(**kwargs)


def save_tiny_model(folder: Path, arch: str, seed: int = 0, **overrides: Any) -> Any:
    """Save a random-weight HF model (float32) with a byte-level tokenizer; returns the HF model."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(tiny_hf_config(arch, **overrides), dtype=torch.float32)
    # Random init leaves norms at 1; perturb them so a wrong norm placement shows up.
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    hf.eval()
    hf.save_pretrained(folder)
    _save_byte_tokenizer(folder)
    return hf


def _save_byte_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(i) if 33 <= i < 127 else f"<{i}>": i for i in range(256)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<0>")
    fast.save_pretrained(folder)


def run_to_end(engine: LLMEngine, ids: list[str]) -> list[list[int]]:
    """Step `engine` until every request has ended, checking the block pool's integrity
    after each step; returns the tokens of requests `ids`, in that order."""
    final: dict[str, list[int]] = {}
    while engine.has_unfinished():
        final.update({o.request_id: o.token_ids for o in engine.step() if o.finished})
        engine.check_integrity()
    return [final[i] for i in ids]


def run_one(engine: LLMEngine, request: GenerationRequest) -> RequestOutput:
    """Submit `request` and step `engine` until nothing is left, checking the pool's
    integrity after each step; returns the request's final output."""
    return until_done(engine, engine.submit(request))


def until_done(engine: LLMEngine, rid: str) -> RequestOutput:
    """Step `engine` until nothing is left, checking the pool's integrity after each step;
    returns request `rid`'s final output."""
    final = None
    while engine.has_unfinished():
        for out in engine.step():
            if out.request_id == rid and out.finished:
                final = out
        engine.check_integrity()
    assert final is not None
    return final


def random_tokens(n: int, seed: int = 0) -> list[int]:
    """`n` seeded token ids in [3, 256) (the tiny models' vocabulary, past the specials)."""
    return torch.randint(3, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def hf_logits(hf: Any, ids: list[int]) -> torch.Tensor:
    """transformers' float32 logits of one prompt."""
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float()


TRITON_KERNEL = "promptcache.model.attention.triton_kernel"
_interpreter_imports: list[str] = []  # "triton" once imported here under the interpreter


def import_triton_for_the_interpreter() -> None:
    """Off CUDA, import Triton now with TRITON_INTERPRET=1 set for the import only.

    Its interpreter runs only in a process whose first import of Triton saw the variable
    (Triton's language makes its own @jit helpers, `tl.zeros` and the like, at import, and
    cannot be imported twice), and much imports Triton in passing (transformers' models
    do), so the test session does this before it collects anything. The variable itself
    is set again only around the tests that run the kernel (`interpreted_triton`); with it
    unset Triton behaves as it would have (it reads the variable when a kernel is defined
    and when one runs)."""
    if torch.cuda.is_available() or "triton" in sys.modules:
        return
    if importlib.util.find_spec("triton") is None:
        return
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        importlib.import_module("triton")
        _interpreter_imports.append("triton")
    finally:
        _restore("TRITON_INTERPRET", old)


@contextmanager
def interpreted_triton() -> Iterator[ModuleType]:
    """The Triton kernel's module; off CUDA, under Triton's CPU interpreter while the block
    runs, and only then: TRITON_INTERPRET=1 set, and the kernel module imported, or
    reloaded in place (the module object stays the one `model.attention.paged` caches),
    under it, since Triton reads it when a kernel is defined and the module reads it at
    import. Afterwards the previous value is back, so no other test or server subprocess
    sees it, and the kernel module is reloaded under that. Triton itself must have been
    imported under the interpreter (`import_triton_for_the_interpreter`, at session start).
    On a GPU the kernel runs compiled and nothing changes."""
    if torch.cuda.is_available():
        yield importlib.import_module(TRITON_KERNEL)
        return
    old = os.environ.get("TRITON_INTERPRET")
    if old != "1":
        import_triton_for_the_interpreter()
        if not _interpreter_imports:
            raise RuntimeError(
                "Triton was imported without TRITON_INTERPRET=1, so its interpreter cannot run"
                " in this process (tests/conftest.py imports it under the interpreter at"
                " session start; something imported it before)"
            )
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield _load(TRITON_KERNEL)
    finally:
        _restore("TRITON_INTERPRET", old)
        _load(TRITON_KERNEL)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _load(name: str) -> ModuleType:
    """Import module `name`, or reload it in place where it is imported already."""
    if name in sys.modules:
        return importlib.reload(sys.modules[name])
    return importlib.import_module(name)


class FakeClock:
    """Time that moves only when a test moves it (`now`), for clocks the code takes."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
