"""Shared fixtures: tiny random-weight models of each architecture, the bundled model,
engines whose block pool is checked for integrity and leaks when each test ends, and
Triton's interpreter for a module. Plain helpers are in tests/helpers.py."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from promptcache.config import DATA_DIR_ENV, EngineConfig
from promptcache.engine.llm_engine import LLMEngine
from promptcache.model.loading.loader import LoadedModel, load_model
from tests.helpers import import_triton_for_the_interpreter, interpreted_triton, save_tiny_model


def pytest_sessionstart(session: pytest.Session) -> None:
    """Off CUDA, Triton is imported under its interpreter before anything else imports it
    (`tests.helpers.import_triton_for_the_interpreter`); TRITON_INTERPRET stays unset."""
    import_triton_for_the_interpreter()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `cuda` run where a GPU is present and skip elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


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


@pytest.fixture(scope="module")
def triton_interpreter() -> Iterator[ModuleType]:
    """The Triton kernel's module; off CUDA under Triton's interpreter, for the module that
    asks for it and only while its tests run (`tests.helpers.interpreted_triton`)."""
    with interpreted_triton() as kernel:
        yield kernel


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
