/* A decoder layer's small element-wise steps on CPU, each one pass over its rows instead
 * of PyTorch's five to eight kernel calls (a decode step of 8 rows spends more time
 * calling them than computing): the residual add with the RMS norm after it, SiLU(gate)
 * times up, and the rotary embedding of q and k with the K/V write into the block pool.
 *
 * Numerics follow PyTorch's kernels for these dtypes, element by element: each bfloat16
 * op computes in float32 and rounds its result to bfloat16 (nearest even), so
 * x * cos + roll(x) * sin rounds the two products and their sum, as three PyTorch ops do.
 * The rotary embedding gives PyTorch's bits in both dtypes (the library is built with
 * -ffp-contract=off: no product is fused into an add). The norm's sum of squares and
 * SiLU's exp are float32 like PyTorch's but not in its order or with its exp, so they may
 * round a bfloat16 output the other way, rarely (bfloat16 only; float32 norms stay
 * PyTorch's).
 *
 * Layouts (elements): row-major matrices with the given row strides; the K and V pools
 * (KV, num_blocks, BS, D) with head stride s_head, each head's slots contiguous
 * (slot = block * BS + offset, D elements a slot). Rows spread over `threads` OpenMP
 * threads where there are enough of them to pay for the fork.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bf16.h"
#include "kernels.h"

#define PAR_MIN_ELEMENTS 65536 /* below this, one thread: a fork costs more */
#define MAX_D 512

static inline float rb(float f) { return bf2f(f2bf(f)); } /* rounded to bfloat16 */

static int bad(int64_t rows, int64_t d, int threads) {
    return rows < 0 || d < 1 || threads < 1 || threads > 4096;
}

static inline float same(float f) { return f; }

/* One row: x += h (rounded) where h is given, then y = w * (x * rsqrt(mean(x^2) + eps));
 * and the kernel over rows. */
#define DEFINE_ADD_NORM(NAME, T, LOAD, ROUND, STORE)                                         \
    static void NAME##_row(T* x, const T* h, const T* w, T* y, int64_t d, float eps) {       \
        float ss = 0.f;                                                                      \
        if (h) {                                                                             \
            for (int64_t i = 0; i < d; i++) {                                                \
                float v = ROUND(LOAD(x[i]) + LOAD(h[i]));                                    \
                x[i] = STORE(v);                                                             \
                ss += v * v;                                                                 \
            }                                                                                \
        } else {                                                                             \
            for (int64_t i = 0; i < d; i++) ss += LOAD(x[i]) * LOAD(x[i]);                   \
        }                                                                                    \
        /* rsqrt in double, rounded once: -ffast-math's float 1/sqrtf is an estimate */      \
        float r = (float)(1.0 / sqrt((double)(ss / (float)d) + (double)eps));                \
        for (int64_t i = 0; i < d; i++) y[i] = STORE(ROUND(LOAD(x[i]) * r) * LOAD(w[i]));     \
    }                                                                                        \
    int NAME(PC_ADD_NORM_ARGS(T)) {                                                          \
        if (bad(rows, d, threads)) return 1;                                                 \
        int par = rows * d >= PAR_MIN_ELEMENTS ? threads : 1;                                \
        _Pragma("omp parallel for schedule(static) num_threads(par)")                        \
        for (int64_t r = 0; r < rows; r++)                                                   \
            NAME##_row(x + r * sx, h ? h + r * sh : NULL, w, y + r * sy, d, eps);            \
        return 0;                                                                            \
    }

DEFINE_ADD_NORM(pc_add_rms_norm_bf16, uint16_t, bf2f, rb, f2bf)
DEFINE_ADD_NORM(pc_add_rms_norm_f32, float, same, same, same)

/* out = silu(gate) * up, gate and up side by side in gu's rows (gate first, i each). */
#define DEFINE_SILU_MUL(NAME, T, LOAD, ROUND, STORE)                                         \
    int NAME(PC_SILU_MUL_ARGS(T)) {                                                          \
        if (bad(rows, i, threads)) return 1;                                                 \
        int par = rows * i >= PAR_MIN_ELEMENTS ? threads : 1;                                \
        _Pragma("omp parallel for schedule(static) num_threads(par)")                        \
        for (int64_t r = 0; r < rows; r++) {                                                 \
            const T *g = gu + r * sgu, *u = g + i;                                           \
            T* o = out + r * so;                                                             \
            for (int64_t j = 0; j < i; j++) {                                                \
                float a = LOAD(g[j]);                                                        \
                o[j] = STORE(ROUND(a / (1.f + expf(-a))) * LOAD(u[j]));                      \
            }                                                                                \
        }                                                                                    \
        return 0;                                                                            \
    }

DEFINE_SILU_MUL(pc_silu_mul_bf16, uint16_t, bf2f, rb, f2bf)
DEFINE_SILU_MUL(pc_silu_mul_f32, float, same, same, same)

/* One head of one row rotated in place: x * cos + roll(x, D/2) * sin' (the signed sine
 * table: see promptcache.model.layers.RotaryEmbedding). */
#define DEFINE_ROTATE(NAME, T, LOAD, ROUND, STORE)                                     \
    static void NAME(T* x, const T* c, const T* s, int d) {                            \
        float v[MAX_D];                                                                \
        for (int j = 0; j < d; j++) v[j] = LOAD(x[j]);                                 \
        int half = d / 2;                                                              \
        for (int j = 0; j < d; j++) {                                                  \
            float other = v[j < half ? j + half : j - half];                           \
            x[j] = STORE(ROUND(ROUND(v[j] * LOAD(c[j])) + ROUND(other * LOAD(s[j])))); \
        }                                                                              \
    }

DEFINE_ROTATE(rotate_bf16, uint16_t, bf2f, rb, f2bf)
DEFINE_ROTATE(rotate_f32, float, same, same, same)

/* q and k of each row of qkv (H q heads, then KV k heads, then KV v heads, D each)
 * rotated in place by the row's cos/sin (rows of D, strides s_cs); the rotated k and the
 * v written into the pools at the row's slot (each of the n_slots of a head; a slot out
 * of range writes nothing and returns 2). */
#define DEFINE_ROPE_KV(NAME, T, ROTATE)                                                     \
    int NAME(PC_ROPE_KV_ARGS(T)) {                                                         \
        if (bad(rows, d, threads) || d > MAX_D || d % 2 || h < 1 || kv < 1) return 1;      \
        for (int64_t r = 0; r < rows; r++)                                                 \
            if (slots[r] < 0 || slots[r] >= n_slots) return 2;                             \
        int par = rows * (h + 2 * kv) * d >= PAR_MIN_ELEMENTS ? threads : 1;               \
        _Pragma("omp parallel for schedule(static) num_threads(par)")                      \
        for (int64_t r = 0; r < rows; r++) {                                               \
            T* row = qkv + r * s_row;                                                      \
            const T *c = cos + r * s_cs, *s = sin + r * s_cs;                              \
            for (int head = 0; head < h + kv; head++) ROTATE(row + head * d, c, s, d);     \
            for (int head = 0; head < kv; head++) {                                        \
                int64_t at = head * s_head + slots[r] * d;                                 \
                memcpy(k_pool + at, row + (h + head) * d, d * sizeof(T));                  \
                memcpy(v_pool + at, row + (h + kv + head) * d, d * sizeof(T));             \
            }                                                                              \
        }                                                                                  \
        return 0;                                                                          \
    }

DEFINE_ROPE_KV(pc_rope_kv_bf16, uint16_t, rotate_bf16)
DEFINE_ROPE_KV(pc_rope_kv_f32, float, rotate_f32)
