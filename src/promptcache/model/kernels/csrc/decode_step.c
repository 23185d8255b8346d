/* A whole decode step's layers in one call, for 4-bit models on CPU: the same
 * kernels the Python forward calls, in the same order on the same buffers, so the same
 * bits, without the ~2 us Python and ctypes spend around each of the ~270 calls of a
 * step (30 layers of the bundled model: about 2.5 of its 14 ms at 8 rows).
 *
 * The kernels come as function pointers from the libraries already loaded
 * (q4_matmul, decode_attention, layer_ops); this file only orders the calls. Per layer:
 *   x += h; n = norm(x)                    add_rms_norm (h: the previous layer's output)
 *   qkv = n Wqkv^T; rotate q, k; write k, v  q4 matmul, rope_kv
 *   a = attention(q over the pool)          decode attention
 *   h = a Wo^T; x += h; n = norm(x)         q4 matmul, add_rms_norm
 *   h = (silu(g) * u)(n Wgu^T) Wdown^T      q4 matmul, silu_mul, q4 matmul
 * then x += h and the final norm into `out`. Rows are float32 (PC_F32) or bfloat16
 * (PC_BF16), the kernels those of that dtype, rows of each buffer contiguous. The structs
 * and the kernels' pointer types are declared in kernels.h. Returns 0, or the first
 * failing kernel's code plus 100 * its place
 * (1 norm, 2 q/k/v, 3 rope, 4 attention, 5 o, 6 gate/up, 7 silu, 8 down).
 */
#include <stdint.h>

#include "kernels.h"

#define TRY(call, place)                  \
    do {                                  \
        int e_ = (call);                  \
        if (e_) return e_ + 100 * (place); \
    } while (0)

static int q4(const Kernels* f, const Q4Weight* w, int dtype, const void* x, int B, void* y,
              int threads) {
    return f->q4(x, dtype, w->k, B, w->codes, w->scale, w->low, w->n, w->k, y, w->n, threads);
}

int pc_decode_layers(const Kernels* f, const Layer* layers, int n_layers, const Dims* d,
                     const Buffers* m, int B, const void* final_norm, const void* cos,
                     const void* sin, const int64_t* slots, const int64_t* tables,
                     int64_t tables_stride, const int64_t* ctx, int threads) {
    const int H = d->hidden, hd = d->head_dim, nq = d->heads, nkv = d->kv_heads;
    const int64_t qkv_w = (int64_t)(nq + 2 * nkv) * hd;
    for (int i = 0; i < n_layers; i++) {
        const Layer* L = layers + i;
        const void* h = i ? m->h : 0;
        TRY(f->norm(m->x, H, h, H, L->in_norm, m->normed, H, B, H, d->eps, threads), 1);
        TRY(q4(f, &L->qkv, d->dtype, m->normed, B, m->qkv, threads), 2);
        TRY(f->rope(m->qkv, qkv_w, B, nq, nkv, hd, cos, sin, hd, L->k_pool, L->v_pool,
                    d->pool_head_stride, slots, d->pool_slots, threads),
            3);
        TRY(f->attn(m->qkv, qkv_w, hd, L->k_pool, L->v_pool, tables, tables_stride, ctx, B, nq,
                    nkv, hd, d->block_size, d->pool_head_stride, d->pool_block_stride,
                    d->scale, m->att, (int64_t)nq * hd, hd, threads),
            4);
        TRY(q4(f, &L->o, d->dtype, m->att, B, m->h, threads), 5);
        TRY(f->norm(m->x, H, m->h, H, L->post_norm, m->normed, H, B, H, d->eps, threads), 1);
        TRY(q4(f, &L->gate_up, d->dtype, m->normed, B, m->gate_up, threads), 6);
        TRY(f->silu(m->gate_up, 2 * (int64_t)d->inter, m->act, d->inter, B, d->inter, threads),
            7);
        TRY(q4(f, &L->down, d->dtype, m->act, B, m->h, threads), 8);
    }
    TRY(f->norm(m->x, H, n_layers ? m->h : 0, H, final_norm, m->out, H, B, H, d->eps, threads),
        1);
    return 0;
}
