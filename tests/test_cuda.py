"""On a CUDA GPU (skipped elsewhere): the engine as it starts there (Triton attention,
warmed up, decode steps replayed from CUDA graphs) against transformers and against
itself without graphs, with the cache on and off, and under preemption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.loading.loader import load_model
from tests.helpers import TOL, random_tokens, save_tiny_model

pytestmark = pytest.mark.cuda
GREEDY = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)


def _hf(folder: Path, dtype: torch.dtype, ids: list[int]) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).cuda().eval()
    with torch.no_grad():
        return hf(torch.tensor([ids], device="cuda")).logits[0].float()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_match_transformers(dtype: torch.dtype, tmp_path: Path, make_engine: Any) -> None:
    save_tiny_model(tmp_path, "llama", seed=1)
    model = load_model(str(tmp_path), device=torch.device("cuda"), dtype=dtype)
    engine = make_engine(model, kv_cache_bytes=16 << 20)
    assert engine.runner.triton and engine.runner.graphs is not None
    ids = random_tokens(200, seed=2)
    ours = engine.prompt_logits(ids, chunk_size=64).float()
    ref = _hf(tmp_path, dtype, ids)
    if dtype == torch.float32:
        assert (ours - ref).abs().max().item() <= TOL
    else:
        agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
        assert agree >= 0.95


def _outputs(engine: Any, prompts: list[list[int]]) -> list[list[int]]:
    engine.generate([prompts[0]], GREEDY)
    return [o.token_ids for o in engine.generate(prompts, GREEDY)]


@pytest.mark.parametrize("kv_blocks", [None, 10], ids=["roomy", "preempting"])
def test_graphs_cache_and_preemption_keep_outputs(
    kv_blocks: int | None, tmp_path: Path, make_engine: Any
) -> None:
    save_tiny_model(tmp_path, "llama", seed=3)
    model = load_model(str(tmp_path), device=torch.device("cuda"), dtype=torch.float32)
    prefix = random_tokens(48, seed=4)
    prompts = [prefix + random_tokens(n, seed=n) for n in (5, 21, 33, 2, 17)]
    per_block = 16 * model.spec.kv_bytes_per_token * 4
    kv = kv_blocks * per_block if kv_blocks else 16 << 20
    runs = {}
    for graphs in (True, False):
        for cache in (True, False):
            engine = make_engine(
                model, kv_cache_bytes=kv, cuda_graphs=graphs, enable_prefix_caching=cache
            )
            runs[graphs, cache] = _outputs(engine, prompts)
            if kv_blocks:
                assert engine.num_preemptions > 0
    assert runs[True, True] == runs[False, True] == runs[True, False] == runs[False, False]
