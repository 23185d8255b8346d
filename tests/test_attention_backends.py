"""One attention interface: the selector gives each `attention_backend` its backend, and
each backend's builder turns a step's layout into that backend's own metadata type."""

from __future__ import annotations

import pytest
import torch

from promptcache.model.attention.backend import SeqChunk, StepLayout
from promptcache.model.attention.metadata import (
    GatheredDecode,
    KernelDecode,
    RunsDecode,
    TorchMetadata,
    TritonMetadata,
)
from promptcache.model.attention.selector import select_backend, uses_cpu_decode
from promptcache.model.attention.torch_backend import CpuKernelBackend, TorchBackend
from promptcache.model.attention.triton_backend import TritonBackend
from promptcache.model.spec import ModelSpec, spec_from_hf_config
from tests.helpers import tiny_hf_config

CPU = torch.device("cpu")
BS = 4


def _spec(sliding_window: int | None = None) -> ModelSpec:
    """The tiny test model's spec (mistral where a sliding window is asked for)."""
    if sliding_window is None:
        return spec_from_hf_config(tiny_hf_config("llama"))
    return spec_from_hf_config(tiny_hf_config("mistral", sliding_window=sliding_window))


def _layout() -> StepLayout:
    """Two decodes (5 and 9 keys) and a prefill chunk of 3 tokens after 4 cached ones."""
    decodes = [SeqChunk(1, [7, 2], 4, 1), SeqChunk(2, [3, 9, 11], 8, 1)]
    prefills = [SeqChunk(3, [5, 6], 4, 3)]
    return StepLayout(decodes, prefills, [10, 11, 12, 13, 14], [4, 8, 4, 5, 6])


def test_the_selector_gives_each_setting_its_backend() -> None:
    spec = _spec()
    for dtype in (torch.float32, torch.bfloat16):
        torch_backend = select_backend("torch", CPU, dtype, spec, BS, 8, 512)
        assert type(torch_backend) is TorchBackend and torch_backend.name == "torch"
        auto = select_backend("auto", CPU, dtype, spec, BS, 8, 512)
        want = CpuKernelBackend if uses_cpu_decode("auto", CPU, dtype, spec) else TorchBackend
        assert type(auto) is want
    windowed = select_backend("auto", CPU, torch.float32, _spec(sliding_window=8), BS, 8, 512)
    assert type(windowed) is TorchBackend  # the C kernel has no sliding window
    with pytest.raises(ValueError, match="must be one of"):
        select_backend("flash", CPU, torch.float32, spec, BS, 8, 512)


def test_the_torch_builder_lays_out_slots_prefills_and_decode_reads() -> None:
    t = TorchBackend(CPU, torch.bfloat16, BS, None).build(_layout())
    meta = t.meta
    assert isinstance(meta, TorchMetadata) and meta.num_decodes == 2
    # slot = block * block_size + offset: decode 1 at position 4 (block 2), decode 2 at
    # position 8 (block 11), the chunk at positions 4..6 (block 6)
    assert meta.slot_mapping.tolist() == [8, 44, 24, 25, 26]
    assert t.input_ids.tolist() == [10, 11, 12, 13, 14] and t.positions.tolist()[0] == 4
    (chunk,) = meta.prefills
    assert (chunk.query_start, chunk.query_len, chunk.context_len) == (2, 3, 7)
    assert chunk.block_ids.tolist() == [5, 6]
    assert isinstance(meta.decode, GatheredDecode | RunsDecode)
    if isinstance(meta.decode, GatheredDecode):
        assert meta.decode.block_tables.tolist() == [[7, 2, 0], [3, 9, 11]]
        assert meta.decode.mask.shape[-1] == 3 * BS


def test_the_cpu_builder_hands_decode_rows_to_the_kernel() -> None:
    meta = CpuKernelBackend(CPU, torch.float32, BS, None).build(_layout()).meta
    assert isinstance(meta, TorchMetadata) and isinstance(meta.decode, KernelDecode)
    assert meta.decode.block_tables.tolist() == [[7, 2, 0], [3, 9, 11]]
    assert meta.decode.context_lens.tolist() == [5, 9]
    assert len(meta.prefills) == 1


def test_the_triton_builder_keeps_tables_on_the_device_and_launches_by_group() -> None:
    backend = TritonBackend(CPU, BS, None, max_seqs=4, max_tokens=64)
    t = backend.build(_layout())
    meta = t.meta
    assert isinstance(meta, TritonMetadata) and meta.num_decodes == 2
    assert meta.slot_mapping.tolist() == [8, 44, 24, 25, 26]
    decode, prefill = meta.launches
    assert decode.block_q == 1 and decode.context_lens.tolist() == [5, 9]
    assert prefill.query_starts.tolist() == [2] and prefill.query_lens.tolist() == [3]
    rows = decode.table_rows.tolist() + prefill.table_rows.tolist()
    held = backend.tables.table[rows, :3].tolist()
    assert held == [[7, 2, 0], [3, 9, 11], [5, 6, 0]]
    assert decode.block_tables.data_ptr() == backend.tables.table.data_ptr()  # read in place
