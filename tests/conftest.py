"""Shared fixtures: tiny random-weight models of each architecture, the bundled model, and
engines whose block pool is checked for integrity and leaks when each test ends."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from promptcache.config import DATA_DIR_ENV, EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.model.loading.loader import LoadedModel, load_model

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `cuda` run where a GPU is present and skip elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


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


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_model(folder, "llama")
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir: Path) -> LoadedModel:
    return load_model(str(tiny_llama_dir), dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_long(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A tiny random Llama with a 4,096-token context (prompts past OpenAI's minimum)."""
    folder = tmp_path_factory.mktemp("tiny-long")
    save_tiny_model(folder, "llama", max_position_embeddings=4096)
    return load_model(str(folder), dtype=torch.float32)


def run_to_end(engine: LLMEngine, ids: list[str]) -> list[list[int]]:
    """Step `engine` until every request has ended, checking the block pool's integrity
    after each step; returns the tokens of requests `ids`, in that order."""
    final: dict[str, list[int]] = {}
    while engine.has_unfinished():
        final.update({o.request_id: o.token_ids for o in engine.step() if o.finished})
        engine.check_integrity()
    return [final[i] for i in ids]


def random_tokens(n: int, seed: int = 0) -> list[int]:
    """`n` seeded token ids in [3, 256) (the tiny models' vocabulary, past the specials)."""
    return torch.randint(3, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture(scope="session")
def bundled() -> LoadedModel:
    """The bundled SmolLM2-135M-Instruct in float32 (exact comparisons need float32)."""
    return load_model(None, dtype=torch.float32)


@pytest.fixture(scope="session", autouse=True)
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Engines built without a data dir keep their disk tier in a temporary folder, never
    in the user's."""
    old = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = str(tmp_path_factory.mktemp("data"))
    yield
    if old is None:
        del os.environ[DATA_DIR_ENV]
    else:
        os.environ[DATA_DIR_ENV] = old


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., LLMEngine]]:
    """Build engines (each with its own disk tier folder unless given one); at teardown each
    must pass its integrity check and hold no blocks."""
    engines: list[LLMEngine] = []

    def factory(model: LoadedModel, **config: Any) -> LLMEngine:
        config.setdefault("disk_cache_dir", str(tmp_path / f"kv-{len(engines)}"))
        engine = LLMEngine(model, EngineConfig(**config))
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        engine.close()
        engine.check_integrity()
        if not engine.has_unfinished():
            assert engine.pool.num_in_use == 0, "blocks leaked after all requests ended"
