"""Attention read in place from the pool's runs equals attention over gathered blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from promptcache.model.attention import paged
from promptcache.model.attention.metadata import GatheredDecode, RunsDecode, TorchMetadata
from promptcache.model.attention.paged import (
    IN_PLACE_MIN_CONTEXT,
    LONE_IN_PLACE_MAX_CONTEXT,
    attend,
    decode_mask,
    write_kv,
)
from promptcache.model.attention.pool_runs import (
    FLASH_WITH_LSE,
    MAX_RUNS,
    Run,
    block_runs,
    decode_runs,
    flash_pieces,
    run_views,
)

H, KV, HD, BS, NB = 6, 2, 16, 4, 40


def test_block_runs_sort_and_merge_consecutive_ids() -> None:
    assert block_runs([7, 6, 5, 1, 2, 9], 4) == [Run(4, 8), Run(20, 12), Run(36, 4)]
    assert block_runs([], 4) == []


def test_decode_runs_join_the_partial_last_block_to_its_run() -> None:
    # blocks 5, 4, 3 (descending, as a freed sequence hands them out) then 6 with 2 slots
    assert decode_runs([5, 4, 3, 6], 14, 4) == [Run(12, 14)]
    # the partial block precedes the others by id: a run of its own, only its valid slots
    assert decode_runs([5, 4, 3, 1], 14, 4) == [Run(12, 12), Run(4, 2)]
    # a table longer than the context (blocks reserved ahead) is cut to the context
    assert decode_runs([2, 3, 4, 9], 8, 4) == [Run(8, 8)]
    scattered = list(range(0, 2 * (MAX_RUNS + 1), 2))
    assert decode_runs(scattered, 4 * len(scattered), 4) is None


def _pool(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(KV, NB, BS, HD, generator=g), torch.randn(KV, NB, BS, HD, generator=g)


def _decode_meta(tables: list[list[int]], lens: list[int], in_place: bool) -> TorchMetadata:
    """Decode rows reading their contexts in place as runs, or gathered and masked."""
    width = max(len(t) for t in tables)
    padded = [t + [0] * (width - len(t)) for t in tables]
    gathered = GatheredDecode(
        torch.tensor(padded), decode_mask(torch.tensor(lens), width * BS, None)
    )
    runs = [decode_runs(t, n, BS) for t, n in zip(tables, lens, strict=True)]
    return TorchMetadata(
        # the step's own K/V land in the pool's last slots, outside every context here
        slot_mapping=torch.arange(NB * BS - len(tables), NB * BS),
        num_decodes=len(tables),
        sliding_window=None,
        prefills=[],
        decode=RunsDecode(runs) if in_place else gathered,  # type: ignore[arg-type]
    )


def _gathered(cache: torch.Tensor, table: list[int], n: int) -> torch.Tensor:
    return cache[:, table].reshape(KV, -1, HD)[:, :n]


@pytest.mark.parametrize("flash", [True, False], ids=["flash", "matmuls"])
def test_decode_in_place_equals_sdpa_over_the_gathered_context(
    flash: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not flash:  # a build without the flash kernel attends to the pieces by matmuls
        monkeypatch.setattr(paged, "FLASH_WITH_LSE", None)
    elif FLASH_WITH_LSE is None:
        pytest.skip("this PyTorch build has no CPU flash kernel with log-sum-exp")
    g = torch.Generator().manual_seed(0)
    k_cache, v_cache = _pool(g)
    tables = [[*list(range(30, 10, -1)), 2, 3], [*list(range(32, 36)), 9], [36, 37, 38]]
    lens = [86, 18, 12]
    q = torch.randn(3, H, HD, generator=g)
    kv_new = torch.zeros(3, KV, HD)
    for in_place in (True, False):
        meta = _decode_meta(tables, lens, in_place)  # as chosen per step (tested below)
        write_kv(kv_new, kv_new, k_cache, v_cache, meta.slot_mapping)
        got = attend(q, kv_new, kv_new, k_cache, v_cache, meta)
        for i, (t, n) in enumerate(zip(tables, lens, strict=True)):
            keys, values = _gathered(k_cache, t, n), _gathered(v_cache, t, n)
            ref = F.scaled_dot_product_attention(q[i][:, None], keys, values, enable_gqa=True)
            torch.testing.assert_close(got[i], ref[:, 0], rtol=1e-5, atol=1e-5)


def test_float32_decode_reads_in_place_from_long_contexts_only() -> None:
    from promptcache.model.attention.paged import reads_in_place

    cpu = torch.device("cpu")
    assert reads_in_place(torch.float32, cpu, [IN_PLACE_MIN_CONTEXT] * 2)
    assert not reads_in_place(torch.float32, cpu, [IN_PLACE_MIN_CONTEXT - 1] * 2)
    scattered = list(range(0, 2 * (MAX_RUNS + 1), 2))  # too scattered: gathered
    assert decode_runs(scattered, 4 * len(scattered), 4) is None
    assert not reads_in_place(torch.bfloat16, cpu, [IN_PLACE_MIN_CONTEXT] * 2)  # the gather wins


def test_a_lone_short_decode_reads_in_place_in_either_dtype(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from promptcache.model.attention.paged import reads_in_place

    cpu = torch.device("cpu")
    if FLASH_WITH_LSE is None:
        pytest.skip("this PyTorch build has no CPU flash kernel with log-sum-exp")
    for dtype in (torch.float32, torch.bfloat16):
        assert reads_in_place(dtype, cpu, [1])
        assert reads_in_place(dtype, cpu, [LONE_IN_PLACE_MAX_CONTEXT])
    assert not reads_in_place(torch.bfloat16, cpu, [LONE_IN_PLACE_MAX_CONTEXT + 1])
    assert not reads_in_place(torch.bfloat16, cpu, [100, 100])  # one batched gather wins
    assert not reads_in_place(torch.float32, cpu, [100, 100])
    assert not reads_in_place(torch.float16, cpu, [100])
    monkeypatch.setattr(paged, "FLASH_WITH_LSE", None)
    assert not reads_in_place(torch.bfloat16, cpu, [100])  # only the flash kernel pays
    assert reads_in_place(torch.float32, cpu, [IN_PLACE_MIN_CONTEXT])


@pytest.mark.skipif(FLASH_WITH_LSE is None, reason="no CPU flash kernel with log-sum-exp")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flash_pieces_equal_one_softmax_over_all_keys(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    k_cache, v_cache = (c.to(dtype) for c in _pool(g))
    qg = torch.randn(KV, H // KV, HD, generator=g).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for runs in ([Run(8, 40)], [Run(8, 40), Run(100, 7), Run(60, 16)]):
        keys, values = run_views(k_cache, runs), run_views(v_cache, runs)
        got = flash_pieces(qg, keys, values)
        k, v = torch.cat(keys, 1).float(), torch.cat(values, 1).float()
        ref = F.scaled_dot_product_attention(qg.float(), k, v)  # (KV, G, hd)
        assert got.dtype == dtype and got.shape == (KV, H // KV, HD)
        torch.testing.assert_close(got.float(), ref, rtol=tol, atol=tol)
