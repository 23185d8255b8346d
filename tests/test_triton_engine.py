"""The engine with its attention through the Triton kernel (`attention_backend="triton"`):
logits equal transformers', and greedy outputs equal those of PyTorch's paths with the
cache on and off, with chunked prefill mixed with decodes, and under preemption. On a GPU
it runs compiled; elsewhere through Triton's interpreter (slow, so tiny models)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch

from promptcache.engine.cuda_graphs import capture_sizes
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import LoadedModel, load_model
from tests.helpers import TOL, hf_logits, random_tokens, run_to_end, save_tiny_model

if importlib.util.find_spec("triton") is None:
    pytest.skip("needs Triton", allow_module_level=True)

# Off CUDA the kernel runs through Triton's interpreter, on only while this module's tests run.
pytestmark = pytest.mark.usefixtures("triton_interpreter")

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "mistral-window": ("mistral", {"sliding_window": 24}),
    "qwen3": ("qwen3", {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk", [None, 19])
def test_logits_match_transformers(
    case: str, chunk: int | None, tmp_path: Path, make_engine: Any
) -> None:
    arch, overrides = CASES[case]
    hf = save_tiny_model(tmp_path, arch, seed=1, **overrides)
    model = load_model(str(tmp_path), device=DEVICE, dtype=torch.float32)
    engine = make_engine(model, kv_cache_bytes=1 << 20, attention_backend="triton")
    assert engine.runner.triton
    ids = random_tokens(61, seed=2)
    ours = engine.prompt_logits(ids, chunk_size=chunk).cpu()
    assert (ours - hf_logits(hf, ids)).abs().max().item() <= TOL


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = tmp_path_factory.mktemp("tiny-triton")
    save_tiny_model(folder, "llama", seed=3)
    return load_model(str(folder), device=DEVICE, dtype=torch.float32)


def _prompts() -> list[list[int]]:
    prefix = random_tokens(40, seed=4)
    return [prefix + random_tokens(n, seed=5 + n) for n in (3, 17, 30, 9)]


def _generate(engine: Any, prompts: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    outs = engine.generate(prompts, GREEDY)
    return [o.token_ids for o in outs], [o.usage.cached_tokens for o in outs]


@pytest.mark.slow
def test_outputs_equal_torch_paths_cache_on_and_off(tiny: LoadedModel, make_engine: Any) -> None:
    prompts = _prompts()
    runs = {}
    for backend in ("torch", "triton"):
        for cache in (True, False):
            engine = make_engine(
                tiny,
                kv_cache_bytes=1 << 20,
                attention_backend=backend,
                enable_prefix_caching=cache,
                max_num_batched_tokens=24,  # chunks mixed with decodes
                usage_rules="exact",
            )
            engine.generate([prompts[0]], GREEDY)  # caches the shared prefix
            runs[backend, cache] = _generate(engine, prompts)
    assert runs["triton", True] == runs["torch", True]
    assert runs["triton", False][0] == runs["torch", True][0]
    assert min(runs["triton", True][1]) == 32  # two whole blocks of the prefix were hits
    assert runs["triton", False][1] == [0, 0, 0, 0]


@pytest.mark.slow
def test_outputs_under_preemption(tiny: LoadedModel, make_engine: Any) -> None:
    prompts = _prompts()
    reference, _ = _generate(make_engine(tiny, kv_cache_bytes=1 << 20), prompts)
    per_block = 16 * tiny.spec.kv_bytes_per_token * 4
    engine = make_engine(tiny, kv_cache_bytes=8 * per_block, attention_backend="triton")
    ids = [engine.add_request(p, GREEDY) for p in prompts]
    outputs = run_to_end(engine, ids)
    assert engine.num_preemptions > 0
    assert outputs == reference


def test_capture_sizes() -> None:
    assert capture_sizes(1) == [1]
    assert capture_sizes(16) == [1, 2, 4, 8, 16]
    assert capture_sizes(20) == [1, 2, 4, 8, 16, 20]
    assert capture_sizes(128)[-3:] == [112, 120, 128]


def _static_decodes(engine: Any, max_batch: int) -> list[int]:
    """Decode-only steps through the static batch (captured on a GPU, eager elsewhere);
    returns the list that records each such step's decodes."""
    engine.runner.use_graphs(max_batch, capture=CUDA)
    graphs, seen = engine.runner.graphs, []
    run = graphs.run

    def counting(ids: list[int], *rest: Any) -> Any:
        seen.append(len(ids))
        return run(ids, *rest)

    graphs.run = counting
    return seen


@pytest.mark.slow
def test_static_decode_batches_keep_outputs(tiny: LoadedModel, make_engine: Any) -> None:
    """Batches padded to the ladder (3 decodes in a batch of 4, 1 in 1, 2 in 2) give the
    outputs of the eager path, with the cache on, chunked prefill alongside."""
    prompts = _prompts()[:3]
    reference, _ = _generate(make_engine(tiny, kv_cache_bytes=1 << 20), prompts)
    engine = make_engine(
        tiny, kv_cache_bytes=1 << 20, attention_backend="triton", max_num_batched_tokens=24
    )
    engine.runner.warm_up()  # writes only the scratch block (the teardown checks the pool)
    seen = _static_decodes(engine, max_batch=4)
    ids = [engine.add_request(p, GREEDY) for p in prompts]
    assert run_to_end(engine, ids) == reference
    assert 3 in seen and 1 in seen  # padded, and a lone decode after the others ended


@pytest.mark.slow
def test_static_decode_batches_under_preemption(tiny: LoadedModel, make_engine: Any) -> None:
    prompts = _prompts()
    reference, _ = _generate(make_engine(tiny, kv_cache_bytes=1 << 20), prompts)
    per_block = 16 * tiny.spec.kv_bytes_per_token * 4
    engine = make_engine(tiny, kv_cache_bytes=8 * per_block, attention_backend="triton")
    seen = _static_decodes(engine, max_batch=2)  # 3 or 4 decodes at once run eagerly
    ids = [engine.add_request(p, GREEDY) for p in prompts]
    outputs = run_to_end(engine, ids)
    assert engine.num_preemptions > 0 and seen
    assert outputs == reference
