"""Paged attention on GPUs as one Triton kernel that reads K/V blocks where they lie.

Every query row of the flat batch attends to its sequence's context through the block
table, with no gather: a program takes a tile of one sequence's queries and one KV head,
walks that sequence's keys in tiles up to the tile's last position, and keeps an online
softmax (flash attention's running max and sum) in float32. The query heads that share
the KV head ride along as extra rows, so each key is read once per tile for all of them:

    program (tile, kv head):  rows = BLOCK_Q queries x G_PAD heads of the group
        for each tile of KEY_TILE keys up to the tile's last position:
            each key's block id from the table; K, V (KEY_TILE, head_dim) read in place
            scores = rows @ K^T, masked causally (and by the sliding window)
            running max / sum / output updated

Decode rows run as tiles of one query each (the group's heads padded to 16 rows, the
smallest a tensor-core dot takes); prefill chunks of all sequences run in one launch of
16-query tiles, each over its cached context and its own causal part. Shapes are static
for a given batch size, so the launch can be captured in a CUDA graph. A row with no key
to see (a padding row of a captured batch) gets zeros, never NaN.

This module imports Triton; `promptcache.model.attention.paged` loads it only where it runs
(`promptcache.model.attention.selector` chooses and `paged_tables` holds the tables, free
of Triton). The tests run the kernel on CPU through Triton's interpreter (`TRITON_INTERPRET=1`).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from promptcache.model.attention.paged_tables import PagedTables

# Under Triton's CPU interpreter (the tests) 16-bit dots are computed wrongly (it
# multiplies their raw bits), so the kernel upcasts their operands to float32 there; and
# it cannot range over tensors, so the key loop is a while loop there (compiled, a for
# loop, which Triton software-pipelines: the next tile's loads overlap this tile's dots).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

# Keys per iteration of a program: one tile may span several blocks (each key's block id
# read from the table) or part of one, so any power-of-two block size fits. Chosen on an
# H100 by bench/triton_tiles.py (Llama-3.2-1B's heads, bfloat16): 128 keys and 4 warps
# were the fastest or level for a 4k and a 16k prefill (16-query tiles: 0.35 and 4.6 ms a
# layer; 64 keys 0.43 and 5.6) and for a batch-128 decode at 1k context (0.107 ms; 64
# keys 0.130).
KEY_TILE = 128
NUM_WARPS = 4


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    tables: PagedTables,
    out: torch.Tensor,
    sliding_window: int | None = None,
    key_tile: int = KEY_TILE,
    num_warps: int = NUM_WARPS,
) -> None:
    """q (T, H, hd) over the pool's (KV, num_blocks, block_size, hd) caches, written into
    `out` (T, H, hd) at the rows the tables name; other rows are left as they are.
    `key_tile`, `num_warps`: the launch's tile of keys and warps a program."""
    assert k_cache.stride() == v_cache.stride(), "K and V pools must share one layout"
    num_tiles = tables.tile_seqs.shape[0]
    if num_tiles == 0:
        return
    h, hd = q.shape[1], q.shape[2]
    kv, bs = k_cache.shape[0], k_cache.shape[2]
    g = h // kv
    g_pad = max(triton.next_power_of_2(g), 16 // tables.block_q)
    _kernel[(num_tiles, kv)](
        q,
        k_cache,
        v_cache,
        out,
        tables.block_tables,
        tables.table_rows,
        tables.context_lens,
        tables.query_starts,
        tables.query_lens,
        tables.tile_seqs,
        tables.tile_offsets,
        hd**-0.5,
        sliding_window or 0,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        tables.block_tables.stride(0),
        G=g,
        G_PAD=g_pad,
        BLOCK_Q=tables.block_q,
        BS=bs,
        TILE=key_tile,
        D=hd,
        HAS_WINDOW=sliding_window is not None,
        INTERP=INTERPRETED,
        num_warps=num_warps,
    )


def _attend(  # type: ignore[no-untyped-def]  # Triton reads the annotations itself
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    tables_ptr,
    rows_ptr,
    ctx_ptr,
    qstart_ptr,
    qlen_ptr,
    tile_seq_ptr,
    tile_off_ptr,
    scale,
    window,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_ch,
    stride_cb,
    stride_cs,
    stride_tb,
    G: tl.constexpr,
    G_PAD: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BS: tl.constexpr,
    TILE: tl.constexpr,
    D: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    INTERP: tl.constexpr,
):
    tile = tl.program_id(0)
    kvh = tl.program_id(1)
    seq = tl.load(tile_seq_ptr + tile)
    q_off = tl.load(tile_off_ptr + tile)
    q_start = tl.load(qstart_ptr + seq)
    q_len = tl.load(qlen_ptr + seq)
    ctx = tl.load(ctx_ptr + seq)

    rows = tl.arange(0, BLOCK_Q * G_PAD)
    tok = q_off + rows // G_PAD
    grp = rows % G_PAD
    row_ok = (tok < q_len) & (grp < G)
    head = kvh * G + grp
    d = tl.arange(0, D)
    q_rows = (q_start + tok).to(tl.int64)
    q = tl.load(
        q_ptr + q_rows[:, None] * stride_qt + head[:, None] * stride_qh + d[None, :],
        mask=row_ok[:, None],
        other=0.0,
    )
    if INTERP:
        q = q.to(tl.float32)
    pos = ctx - q_len + tok  # absolute position of each row's query
    last = ctx - q_len + tl.minimum(q_off + BLOCK_Q, q_len) - 1  # the tile's last query
    first_tile = 0
    if HAS_WINDOW:
        first_tile = tl.maximum(ctx - q_len + q_off - window + 1, 0) // TILE

    m_i = tl.full([BLOCK_Q * G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_Q * G_PAD], tl.float32)
    acc = tl.zeros([BLOCK_Q * G_PAD, D], tl.float32)
    head_base = kvh.to(tl.int64) * stride_ch
    table = tables_ptr + tl.load(rows_ptr + seq).to(tl.int64) * stride_tb
    n_tiles = (last + TILE) // TILE  # none where last < 0
    if INTERP:  # a while loop: the interpreter cannot range over tensors
        j = first_tile
        while j < n_tiles:
            m_i, l_i, acc = _key_tile(
                q,
                k_ptr,
                v_ptr,
                table,
                head_base,
                stride_cb,
                stride_cs,
                j,
                ctx,
                pos,
                window,
                scale,
                m_i,
                l_i,
                acc,
                BS,
                TILE,
                D,
                HAS_WINDOW,
                INTERP,
            )
            j += 1
    else:  # compiled: a for loop, which Triton software-pipelines (loads ahead of dots)
        for j in range(first_tile, n_tiles):
            m_i, l_i, acc = _key_tile(
                q,
                k_ptr,
                v_ptr,
                table,
                head_base,
                stride_cb,
                stride_cs,
                j,
                ctx,
                pos,
                window,
                scale,
                m_i,
                l_i,
                acc,
                BS,
                TILE,
                D,
                HAS_WINDOW,
                INTERP,
            )
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    o_offs = q_rows[:, None] * stride_ot + head[:, None] * stride_oh + d[None, :]
    tl.store(o_ptr + o_offs, out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])


def _key_step(  # type: ignore[no-untyped-def]
    q,
    k_ptr,
    v_ptr,
    table,
    head_base,
    stride_cb,
    stride_cs,
    j,
    ctx,
    pos,
    window,
    scale,
    m_i,
    l_i,
    acc,
    BS: tl.constexpr,
    TILE: tl.constexpr,
    D: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    INTERP: tl.constexpr,
):
    """One tile of TILE keys (positions j*TILE..): K, V read in place through the block
    table, the online softmax's running max / sum / output updated and returned."""
    kpos = j * TILE + tl.arange(0, TILE)  # TILE // BS blocks, or a part of one
    in_ctx = kpos < ctx
    block = tl.load(table + kpos // BS, mask=in_ctx, other=0).to(tl.int64)
    offs = head_base + block[:, None] * stride_cb + (kpos % BS)[:, None] * stride_cs
    offs = offs + tl.arange(0, D)[None, :]
    k = tl.load(k_ptr + offs, mask=in_ctx[:, None], other=0.0)  # (TILE, D)
    if INTERP:
        k = k.to(tl.float32)
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # (rows, TILE) float32
    seen = kpos[None, :] <= pos[:, None]
    if HAS_WINDOW:
        seen = seen & (pos[:, None] - kpos[None, :] < window)
    s = tl.where(seen, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing seen yet
    alpha = tl.exp(m_i - m_ref)
    p = tl.exp(s - m_ref[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(v_ptr + offs, mask=in_ctx[:, None], other=0.0)
    if INTERP:
        v = v.to(tl.float32)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    return m_new, l_i, acc


_key_tile = triton.jit(_key_step)
_kernel = triton.jit(_attend)  # the tests also compile `_attend` for GPUs, on any machine
