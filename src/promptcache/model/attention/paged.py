"""Paged attention over a flat batch of tokens from many sequences.

The batch is laid out as ``[decode rows | prefill chunk 1 | prefill chunk 2 | ...]``:

    flat tokens:  d0 d1 d2 | p0 p0 p0 p0 | p1 p1 p1
                  <- Bd -> | <- q_len -> | ...

Each layer first writes the batch's K/V into the block pool at ``slot_mapping``
(slot = block_id * block_size + offset), then reads every sequence's whole context back
through its block table. Decode rows are attended together (padded to the longest context
and masked); each prefill chunk is attended on its own, causally, after its cached context.
A lone decode over a short context, and float32 decode over long contexts, skip the gather
and read the pool's runs of blocks in place (`model.attention.pool_runs`); a long chunk
over cached context attends to the cached keys and to its own as two flash calls joined by
their log-sum-exps. On CPU, decode rows go through our C kernel where it builds
(`model.kernels.decode_attention`). On CUDA, where Triton is at hand, one kernel reads the
blocks in place for every row instead (`model.attention.triton_kernel`). This module knows
nothing about scheduling or which blocks are free.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch
import torch.nn.functional as F

from promptcache.model.attention.metadata import (
    AttentionMetadata,
    DecodeReads,
    GatheredDecode,
    KernelDecode,
    PrefillSlice,
    RunsDecode,
    TorchMetadata,
    TritonMetadata,
)
from promptcache.model.attention.pool_runs import (
    FLASH_WITH_LSE,
    Run,
    attend_pieces,
    flash_pieces,
    run_views,
)
from promptcache.model.device import can_pack
from promptcache.model.kernels import decode_attention

# A prefill chunk over cached context whose score matrix (query rows x heads x keys) is at
# most this big runs as two batched matmuls instead of PyTorch's CPU flash kernel, which
# is slow for a short chunk over a long context (bf16, 2 cores, per layer: 26 queries over
# 4.6k keys 2.8 vs 3.3 ms, 128 over 4.6k 11 vs 16 ms). Much larger score matrices
# (1024 x 1024 x 9 heads) lose to flash, which never materializes them.
GROUPED_PREFILL_MAX_SCORES = 6_000_000

# Float32 decode reads its context in place from this many keys per sequence on average.
IN_PLACE_MIN_CONTEXT = 2048

# A step's only decode reads its context in place up to this many keys, in any CPU dtype.
LONE_IN_PLACE_MAX_CONTEXT = 1536


def write_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write the batch's k/v (T, KV, hd) into the pools at their slots (T,).

    The pool is heads-first so that gathering a sequence's blocks yields (KV, S, hd)
    matrices that the attention matmuls read as they are: one copy per read, no transpose.
    """
    num_kv, hd = k_cache.shape[0], k_cache.shape[3]
    k_cache.view(num_kv, -1, hd).index_copy_(1, slot_mapping, k.transpose(0, 1))
    v_cache.view(num_kv, -1, hd).index_copy_(1, slot_mapping, v.transpose(0, 1))


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
) -> torch.Tensor:
    """Attention of the batch's queries q (T, H, hd) over their contexts, whose K/V
    (this step's k/v (T, KV, hd) included) are in the pools already -> (T, H, hd), by the
    backend the metadata's type names."""
    if isinstance(meta, TritonMetadata):
        out = torch.empty_like(q)
        for tables in meta.launches:
            _triton().paged_attention(q, k_cache, v_cache, tables, out, meta.sliding_window)
        return out
    assert isinstance(meta, TorchMetadata), type(meta)
    return _torch_attend(q, k, v, k_cache, v_cache, meta)


def _torch_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: TorchMetadata,
) -> torch.Tensor:
    """PyTorch's paths: decode rows together, then each prefill chunk on its own."""
    nd = meta.num_decodes
    if meta.decode is not None and nd == q.shape[0]:  # decode rows only
        return _decode_attention(q, k_cache, v_cache, meta.decode)
    out = torch.empty_like(q)
    if meta.decode is not None:
        out[:nd] = _decode_attention(q[:nd], k_cache, v_cache, meta.decode)
    for p in meta.prefills:
        rows = slice(p.query_start, p.query_start + p.query_len)
        if p.context_len == p.query_len:  # no cached context: attend to the chunk itself
            keys, values = k[rows].transpose(0, 1), v[rows].transpose(0, 1)
        else:  # whole blocks: the slots after context_len are masked, not sliced off
            if p.rows is None:
                p.rows = gather_rows(k_cache, p.block_ids)
            keys = _gather(k_cache, p.block_ids, p.rows)  # (KV, n_blocks * block_size, hd)
            values = _gather(v_cache, p.block_ids, p.rows)
            if _grouped_prefill_fits(q, p, meta.sliding_window):
                out[rows] = grouped_prefill_attention(q[rows], keys, values, p.context_len)
                continue
            keys, values = keys[:, : p.context_len], values[:, : p.context_len]
            if _splits(q, p.query_len, meta.sliding_window):
                out[rows] = split_prefill_attention(q[rows], keys, values)
                continue
        out[rows] = _prefill_attention(q[rows], keys, values, p.mask)
    return out


def gather_rows(cache: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """The rows of `cache` viewed as (KV * num_blocks) blocks that `_gather` reads: the
    same for every layer (their pools have one shape), so computed once per step."""
    kv, nb = cache.shape[0], cache.shape[1]
    heads = torch.arange(kv, device=cache.device).view(kv, *([1] * block_ids.dim()))
    return (heads * nb + block_ids).reshape(-1)


def _gather(cache: torch.Tensor, block_ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(KV, num_blocks, bs, hd) and ids (..., n) -> (KV, ..., n * bs, hd), contiguous.

    One row gather over the pool viewed as (KV * num_blocks) rows of a block each:
    ~7x faster than advanced indexing on dim 1 (0.03 vs 0.2 ms for 3 x 291 blocks).
    """
    kv, nb, bs, hd = cache.shape
    out = torch.index_select(cache.view(kv * nb, bs * hd), 0, rows)
    return out.view(kv, *block_ids.shape[:-1], block_ids.shape[-1] * bs, hd)


def matmul_paths(q: torch.Tensor) -> bool:
    """Whether attention over `q` takes the two-matmul paths instead of PyTorch's kernels:
    on CPU in a 16-bit dtype, and for bfloat16 only where the CPU computes it natively.
    Measured per layer, 2 cores: with native bfloat16 (AVX512-BF16) the matmul paths win
    6-9x for decode and ~2x for a short chunk over a long context; with bfloat16 emulated
    (oneDNN and ATen limited to AVX2) they lose up to 22x on such chunks, and in float32
    the kernels are as fast or faster either way."""
    return q.device.type == "cpu" and q.dtype != torch.float32 and _fast_16bit(q.dtype)


def decode_by_matmuls(q: torch.Tensor) -> bool:
    """Whether decode attention takes the two-matmul path: where the other attention
    paths do, and in float32 on CPU too, where PyTorch's SDPA with the padding mask is
    slower (per layer, 2 cores: 8 x 1k keys 1.7 vs 0.75 ms, 8 x 128 keys 0.29 vs 0.16 ms,
    1 x 4.6k keys on par; `bench/attention.py`)."""
    return matmul_paths(q) or (q.device.type == "cpu" and q.dtype == torch.float32)


def reads_in_place(dtype: torch.dtype, device: torch.device, context_lens: list[int]) -> bool:
    """Whether this step's decodes read their contexts in place. Per layer, 2 cores, the
    pool in memory rather than in the CPU's caches (`bench/attention.py`), in place vs
    gathered (the faster of SDPA and matmuls):

    - a lone decode over at most `LONE_IN_PLACE_MAX_CONTEXT` keys, float32 or bfloat16:
      the flash kernel over the runs skips the gather's fixed costs (bf16 128 keys 0.05 vs
      0.11 ms, 1k 0.17 vs 0.18, 2k 0.31 vs 0.25; float32 128 keys 0.05 vs 0.07, 2k 0.30
      vs 0.37). In the engine, bf16 decode at 1k context runs 7 % faster, even at 2k. For
      several decodes a call per sequence costs more than one batched gather (8 x 128
      keys: 0.36 vs 0.16 ms in bf16);
    - float32 from `IN_PLACE_MIN_CONTEXT` keys per sequence on average, where the gather's
      copy (4 bytes a value) costs more than strided reads (8 x 4.6k keys 4.2 vs 8.1 ms;
      8 x 128 0.41 vs 0.23). In bfloat16 over long contexts the gather stays (its copy is
      cheap, the batched matmuls on the contiguous copy fast: 1 x 4.6k 0.35 vs 0.66 ms).

    Decided per step from the decodes' context lengths, before any runs are computed."""
    if device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16):
        return False
    lone = len(context_lens) == 1 and context_lens[0] <= LONE_IN_PLACE_MAX_CONTEXT
    if lone and FLASH_WITH_LSE is not None:
        return True
    return dtype == torch.float32 and sum(context_lens) >= IN_PLACE_MIN_CONTEXT * len(context_lens)


@functools.cache
def _triton() -> ModuleType:
    """The Triton kernel's module, imported on first use (where Triton is installed)."""
    from promptcache.model.attention import triton_kernel

    return triton_kernel


@functools.cache
def _fast_16bit(dtype: torch.dtype) -> bool:
    return dtype != torch.bfloat16 or can_pack(torch.device("cpu"), dtype)


def _grouped_prefill_fits(q: torch.Tensor, p: PrefillSlice, sliding_window: int | None) -> bool:
    if not matmul_paths(q) or sliding_window is not None:
        return False
    return p.query_len * q.shape[1] * p.context_len <= GROUPED_PREFILL_MAX_SCORES


def _decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, reads: DecodeReads
) -> torch.Tensor:
    """Decode rows q (Bd, H, hd) over their contexts, read as `reads` says."""
    if isinstance(reads, KernelDecode):
        tables, lens = reads.block_tables, reads.context_lens
        return decode_attention.decode_attention(q, k_cache, v_cache, tables, lens)
    if isinstance(reads, RunsDecode):
        return _decode_in_place(q, k_cache, v_cache, reads.runs)
    return _decode_gathered(q, k_cache, v_cache, reads)


def _decode_gathered(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, reads: GatheredDecode
) -> torch.Tensor:
    tables = reads.block_tables
    if reads.rows is None:
        reads.rows, reads.hidden = gather_rows(k_cache, tables), ~reads.mask
    keys = _gather(k_cache, tables, reads.rows)  # (KV, Bd, W, hd)
    values = _gather(v_cache, tables, reads.rows)
    if decode_by_matmuls(q):
        assert reads.hidden is not None
        return grouped_decode_attention(q, keys, values, reads.hidden)
    o = F.scaled_dot_product_attention(
        q.unsqueeze(2),
        keys.transpose(0, 1),  # (Bd, KV, W, hd)
        values.transpose(0, 1),
        attn_mask=reads.mask,
        enable_gqa=True,
    )  # (Bd, H, 1, hd)
    return o.squeeze(2)


def _decode_in_place(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, runs: list[list[Run]]
) -> torch.Tensor:
    """Each sequence's single query over its runs of the pool, read in place: by the flash
    kernel where the build has it, else by matmuls."""
    h, hd = q.shape[1], q.shape[2]
    kv = k_cache.shape[0]
    out = torch.empty_like(q)
    for i, seq_runs in enumerate(runs):
        keys, values = run_views(k_cache, seq_runs), run_views(v_cache, seq_runs)
        if FLASH_WITH_LSE is not None:
            o = flash_pieces(q[i].view(kv, h // kv, hd), keys, values)
        else:
            o = attend_pieces((q[i] * hd**-0.5).view(kv, h // kv, hd), keys, values)
        out[i] = o.reshape(h, hd)
    return out


def grouped_decode_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, hidden: torch.Tensor
) -> torch.Tensor:
    """Single-query GQA attention as two batched matmuls: q (Bd, H, hd) over keys/values
    (KV, Bd, W, hd), the keys where `hidden` (Bd, 1, 1, W) is True left out (the inverse of
    `decode_mask`) -> (Bd, H, hd). Scores stay in q's dtype, as in transformers' eager
    attention; softmax accumulates in float32.

    On CPU in bfloat16/float16, PyTorch's SDPA kernel is ~10x slower than this for one query
    per sequence (measured: 5.7 ms vs 0.5 ms at 8 x 1k context).
    """
    bd, h, hd = q.shape
    kv = keys.shape[0]
    qg = (q * hd**-0.5).view(bd, kv, h // kv, hd).transpose(0, 1)  # (KV, Bd, G, hd)
    scores = torch.matmul(qg, keys.transpose(-1, -2))  # (KV, Bd, G, W)
    scores.masked_fill_(hidden.view(1, bd, 1, -1), float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # accumulates in float32 for bf16/fp16 inputs
    return torch.matmul(probs, values).transpose(0, 1).reshape(bd, h, hd)


def grouped_prefill_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, context_len: int
) -> torch.Tensor:
    """Causal GQA attention of q (q_len, H, hd), positions context_len - q_len .. context_len
    - 1, over keys and values (KV, S >= context_len, hd), as two batched matmuls
    -> (q_len, H, hd). Scores stay in q's dtype (as in transformers' eager attention);
    softmax accumulates in float32.

    Every query sees all the context before the chunk, so only the corner from the chunk's
    first position on needs a mask (its own future and the padding slots after
    context_len): a (q_len, S - start) mask, not a (q_len, S) one. Keys are read whole, as
    gathered: a slice would make the matmul copy them.
    """
    q_len, h, hd = q.shape
    kv, s = keys.shape[0], keys.shape[1]
    g, start = h // kv, context_len - q_len
    qg = (q * hd**-0.5).view(q_len, kv, g, hd).permute(1, 2, 0, 3).reshape(kv, g * q_len, hd)
    scores = torch.matmul(qg, keys.transpose(1, 2))  # (KV, G * q_len, S)
    corner = scores.view(kv, g, q_len, s)[..., start:]  # (KV, G, q_len, S - start)
    corner.masked_fill_(_future(q_len, s - start, q.device), float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # accumulates in float32 for bf16/fp16 inputs
    out = torch.matmul(probs, values)  # (KV, G * q_len, hd)
    return out.view(kv, g, q_len, hd).permute(2, 0, 1, 3).reshape(q_len, h, hd)


def _future(q_len: int, width: int, device: torch.device) -> torch.Tensor:
    """(q_len, width) True above the diagonal: the keys after each query."""
    return torch.ones(q_len, width, dtype=torch.bool, device=device).triu(1)


# Chunks of at least this many queries split (below it, copying the cached keys for every
# query head costs more than the masked kernel wastes: per layer over 4k keys, float32,
# 32 queries 3.8 vs 2.9 ms, 256 18.2 vs 17.4, 512 34.6 vs 37.1).
SPLIT_MIN_QUERIES = 512


def _splits(q: torch.Tensor, query_len: int, sliding_window: int | None) -> bool:
    if q.device.type != "cpu" or sliding_window is not None or FLASH_WITH_LSE is None:
        return False
    return query_len >= SPLIT_MIN_QUERIES


def split_prefill_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """A chunk's queries (q_len, H, hd), the last q_len of keys/values' S positions
    (KV, S, hd), as two flash calls joined by their log-sum-exps -> (q_len, H, hd):
    unmasked over the S - q_len cached keys that every query sees, causal over the chunk's
    own. The masked kernel instead computes every query against every key (the masked
    ones too) and reads the mask: per layer, 2 cores, a 1,024-token chunk over 2,048 keys
    takes 30 ms against 37 ms in float32, 30 against 35 in bfloat16.
    """
    assert FLASH_WITH_LSE is not None
    q_len, h, _ = q.shape
    kv, start = keys.shape[0], keys.shape[1] - q_len
    qh = q.transpose(0, 1).unsqueeze(0).contiguous()  # (1, H, q_len, hd)
    k = keys.repeat_interleave(h // kv, dim=0).unsqueeze(0)  # (1, H, S, hd)
    v = values.repeat_interleave(h // kv, dim=0).unsqueeze(0)
    o_ctx, lse_ctx = FLASH_WITH_LSE(qh, k[:, :, :start], v[:, :, :start])
    o_own, lse_own = FLASH_WITH_LSE(qh, k[:, :, start:], v[:, :, start:], is_causal=True)
    # softmax over both halves: weight exp(lse_ctx) / (exp(lse_ctx) + exp(lse_own))
    w_ctx = torch.sigmoid(lse_ctx.float() - lse_own.float()).unsqueeze(-1)
    out = torch.lerp(o_own.float(), o_ctx.float(), w_ctx).to(q.dtype)
    return out[0].transpose(0, 1)


def _prefill_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """q (q_len, H, hd) over keys/values (KV, S, hd) -> (q_len, H, hd).

    Heads-first contiguous inputs: the CPU flash kernel runs ~10 % faster on them.
    """
    o = F.scaled_dot_product_attention(
        q.transpose(0, 1).unsqueeze(0).contiguous(),  # (1, H, q_len, hd)
        keys.unsqueeze(0).contiguous(),  # (1, KV, S, hd)
        values.unsqueeze(0).contiguous(),
        attn_mask=mask,
        is_causal=mask is None,
        enable_gqa=True,
    )
    return o[0].transpose(0, 1)  # (q_len, H, hd)


def causal_mask(
    query_len: int, context_len: int, sliding_window: int | None, device: torch.device
) -> torch.Tensor | None:
    """Mask for a chunk whose queries are the last `query_len` of `context_len` positions.

    Returns None when plain top-left causal attention is exact (no cached context, no window).
    """
    if query_len == context_len and sliding_window is None:
        return None
    q_pos = torch.arange(context_len - query_len, context_len, device=device)[:, None]
    k_pos = torch.arange(context_len, device=device)[None, :]
    allowed = k_pos <= q_pos
    if sliding_window is not None:
        allowed &= q_pos - k_pos < sliding_window
    return allowed[None, None]


def decode_mask(context_lens: torch.Tensor, width: int, sliding_window: int | None) -> torch.Tensor:
    """(Bd,) context lengths -> (Bd, 1, 1, width) mask of each row's valid keys."""
    k_pos = torch.arange(width, device=context_lens.device)[None, :]
    allowed = k_pos < context_lens[:, None]
    if sliding_window is not None:
        allowed &= (context_lens[:, None] - 1) - k_pos < sliding_window
    return allowed[:, None, None, :]
