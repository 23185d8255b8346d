"""The KV identity that seeds block hashes: the model's content, not its folder.

Same weights in any folder give the same block hashes; a changed weight, another KV dtype
or another block size gives different ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from promptcache.cache.block_hash import chain_hashes, seed_hash
from promptcache.engine.kv_cache import kv_identity
from promptcache.model.loading.fingerprint import DIGESTS_FILE, model_fingerprint
from promptcache.model.loading.loader import LoadedModel, load_model, resolve_model_path
from tests.helpers import save_tiny_model

TOKENS = list(range(100, 164))  # four 16-token blocks


def _hashes(folder: Path, dtype: torch.dtype = torch.float32, block_size: int = 16) -> list:
    identity = kv_identity(model_fingerprint(folder), dtype, block_size)
    return chain_hashes(seed_hash(identity, "tenant"), TOKENS, block_size)


def test_bundled_model_in_two_folders_hashes_the_same(tmp_path: Path) -> None:
    source = resolve_model_path(None)
    a = Path(shutil.copytree(source, tmp_path / "a", ignore=shutil.ignore_patterns(".*")))
    b = Path(shutil.copytree(source, tmp_path / "elsewhere" / "b-other-name"))
    assert _hashes(a) == _hashes(b) == _hashes(source)
    assert (a / DIGESTS_FILE).is_file()  # remembered beside the files for the next load
    assert _hashes(a) == _hashes(b)  # and reused


def test_changed_weight_dtype_or_block_size_hash_differently(tmp_path: Path) -> None:
    base = tmp_path / "base"
    save_tiny_model(base, "llama")
    changed = Path(shutil.copytree(base, tmp_path / "changed"))
    [weights] = sorted(changed.glob("*.safetensors"))
    state = load_file(weights)
    name = next(k for k in state if k.endswith("down_proj.weight"))
    state[name] = state[name].clone()
    state[name][0, 0] += 1e-3  # one weight, slightly
    save_file(state, weights, metadata={"format": "pt"})
    same = _hashes(base)
    assert _hashes(changed) != same
    assert set(_hashes(changed)).isdisjoint(same)
    assert _hashes(base, dtype=torch.bfloat16) != same
    assert _hashes(base, block_size=32)[:1] != same[:1]
    assert _hashes(base) == same


@pytest.mark.slow
def test_engines_on_copies_index_the_same_hashes(
    tmp_path: Path, tiny_llama_dir: Path, tiny_llama: LoadedModel, make_engine: object
) -> None:
    from promptcache.engine.sampling_params import SamplingParams

    copy = load_model(str(shutil.copytree(tiny_llama_dir, tmp_path / "copy")), dtype=torch.float32)
    assert copy.fingerprint == tiny_llama.fingerprint
    indexed = []
    for model in (tiny_llama, copy):
        engine = make_engine(model, min_prompt_tokens=16, increment=16)  # type: ignore[operator]
        engine.add_request(TOKENS, SamplingParams(max_tokens=1, temperature=0), cache_salt="t")
        while engine.has_unfinished():
            engine.step()
        indexed.append({h for h, _ in engine.pool.index.items()})
    assert indexed[0] == indexed[1]
    assert len(indexed[0]) == 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identity_names_the_dtype(dtype: torch.dtype) -> None:
    other = torch.bfloat16 if dtype is torch.float32 else torch.float32
    assert kv_identity("w", dtype, 16) == kv_identity("w", dtype, 16)
    assert kv_identity("w", dtype, 16) != kv_identity("w", other, 16)
