/* Decode attention on CPU: each sequence's single query over its KV blocks, read where
 * they lie in the block pool (no gather), flash-decoding style.
 *
 * Work items are (sequence, KV head, chunk of CHUNK keys), spread over `threads` OpenMP
 * threads (PyTorch's intra-op count; the library links the libgomp PyTorch loaded). An item computes the
 * scores of the G query heads that share the KV head, their softmax over the chunk
 * (max, sum) and the weighted sum of the values; a second pass joins the chunks of
 * each (sequence, KV head) by their maxima and sums. Scores, softmax and sums are in
 * float32; outputs are rounded to the input's dtype.
 *
 * Layouts (elements): q and out (B, H, D) with strides (q_sb, q_sh, 1); the K and V
 * pools (KV, num_blocks, BS, D) with strides (s_head, s_block, D, 1); tables (B, W)
 * int64 block ids with row stride t_sb; ctx (B,) int64 keys per sequence (>= 1).
 *
 * Built by promptcache.model.kernels.build with -O3 -march=native -ffast-math -fopenmp
 * (expf vectorized through glibc's libmvec). With D == 64 and G <= 4, float32 on AVX512F
 * and bfloat16 on AVX512-BF16 take hand-vectorized paths (bfloat16: dpbf16 dot
 * products): the output held in registers, the next block prefetched. Elsewhere the
 * generic loops, vectorized by the compiler for whatever the CPU has (AVX2 included).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "kernels.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define CHUNK 256
#define MAXG 16
#define MAXD 256

static inline float f2f(float x) { return x; }

/* Softmax of each head's n scores in place: their max and sum out. */
static void softmax_rows(float s[][CHUNK], int G, int n, float* m_out, float* l_out) {
    for (int g = 0; g < G; g++) {
        float m = -FLT_MAX, l = 0.f;
        for (int i = 0; i < n; i++) m = s[g][i] > m ? s[g][i] : m;
        for (int i = 0; i < n; i++) {
            float p = expf(s[g][i] - m);
            s[g][i] = p;
            l += p;
        }
        m_out[g] = m;
        l_out[g] = l;
    }
}

/* One item, any D and G, either dtype: keys [t0, t1) walked block by block. */
#define DEFINE_ITEM(NAME, T, TO_F)                                                         \
    static void NAME(const float* qf, const T* k, const T* v, const int64_t* table, int G, \
                     int D, int BS, int64_t s_block, int t0, int t1, float* m_out,         \
                     float* l_out, float* acc) {                                           \
        float s[MAXG][CHUNK];                                                              \
        float x[MAXD];                                                                     \
        int t = 0;                                                                         \
        for (int pos = t0; pos < t1;) {                                                    \
            int blk = pos / BS, end = (blk + 1) * BS < t1 ? (blk + 1) * BS : t1;           \
            const T* kp = k + table[blk] * s_block + (int64_t)(pos - blk * BS) * D;        \
            for (; pos < end; pos++, t++, kp += D) {                                       \
                for (int d = 0; d < D; d++) x[d] = TO_F(kp[d]);                            \
                for (int g = 0; g < G; g++) {                                              \
                    float dot = 0.f;                                                       \
                    for (int d = 0; d < D; d++) dot += qf[g * D + d] * x[d];               \
                    s[g][t] = dot;                                                         \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        softmax_rows(s, G, t1 - t0, m_out, l_out);                                         \
        memset(acc, 0, sizeof(float) * G * D);                                             \
        t = 0;                                                                             \
        for (int pos = t0; pos < t1;) {                                                    \
            int blk = pos / BS, end = (blk + 1) * BS < t1 ? (blk + 1) * BS : t1;           \
            const T* vp = v + table[blk] * s_block + (int64_t)(pos - blk * BS) * D;        \
            for (; pos < end; pos++, t++, vp += D) {                                       \
                for (int d = 0; d < D; d++) x[d] = TO_F(vp[d]);                            \
                for (int g = 0; g < G; g++) {                                              \
                    float p = s[g][t];                                                     \
                    for (int d = 0; d < D; d++) acc[g * D + d] += p * x[d];                \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
    }

DEFINE_ITEM(item_bf16, uint16_t, bf2f)
DEFINE_ITEM(item_f32, float, f2f)

/* The fast paths, D == 64: per dtype, the group's queries prepared once, a key row's
 * score for head g, and 16 values of a row as floats; DEFINE_FAST walks the keys with
 * them, G a constant after inlining so that the G x 4 accumulators stay in registers,
 * the next block prefetched. Without the ISA, DEFINE_NO_FAST: the generic loops serve. */
#define DEFINE_FAST(NAME, T, SFX)                                                              \
    static inline __attribute__((always_inline)) void NAME##_g(                                \
        const float* qf, const T* k, const T* v, const int64_t* table, const int G, int BS,    \
        int64_t s_block, int t0, int t1, float* m_out, float* l_out, float* acc_out) {         \
        float s[MAXG][CHUNK];                                                                  \
        q_##SFX q;                                                                             \
        prep_##SFX(qf, G, &q);                                                                 \
        int t = 0;                                                                             \
        for (int pos = t0; pos < t1;) {                                                        \
            int blk = pos / BS, end = (blk + 1) * BS < t1 ? (blk + 1) * BS : t1;               \
            const T* kp = k + table[blk] * s_block + (int64_t)(pos - blk * BS) * 64;           \
            if (end < t1) prefetch_bytes(k + table[blk + 1] * s_block, BS * 64 * sizeof(T));   \
            for (; pos < end; pos++, t++, kp += 64)                                            \
                for (int g = 0; g < G; g++) s[g][t] = score_##SFX(&q, g, kp);                  \
        }                                                                                      \
        softmax_rows(s, G, t1 - t0, m_out, l_out);                                             \
        __m512 acc[4][4];                                                                      \
        for (int g = 0; g < G; g++)                                                            \
            for (int i = 0; i < 4; i++) acc[g][i] = _mm512_setzero_ps();                       \
        t = 0;                                                                                 \
        for (int pos = t0; pos < t1;) {                                                        \
            int blk = pos / BS, end = (blk + 1) * BS < t1 ? (blk + 1) * BS : t1;               \
            const T* vp = v + table[blk] * s_block + (int64_t)(pos - blk * BS) * 64;           \
            if (end < t1) prefetch_bytes(v + table[blk + 1] * s_block, BS * 64 * sizeof(T));   \
            for (; pos < end; pos++, t++, vp += 64) {                                          \
                __m512 x[4];                                                                   \
                for (int i = 0; i < 4; i++) x[i] = row16_##SFX(vp + 16 * i);                   \
                for (int g = 0; g < G; g++) {                                                  \
                    __m512 p = _mm512_set1_ps(s[g][t]);                                        \
                    for (int i = 0; i < 4; i++) acc[g][i] = _mm512_fmadd_ps(p, x[i], acc[g][i]); \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        for (int g = 0; g < G; g++)                                                            \
            for (int i = 0; i < 4; i++)                                                        \
                _mm512_storeu_ps(acc_out + g * 64 + 16 * i, acc[g][i]);                        \
    }                                                                                          \
    static int NAME(const float* qf, const T* k, const T* v, const int64_t* table, int G,      \
                    int D, int BS, int64_t s_block, int t0, int t1, float* m, float* l,        \
                    float* acc) {                                                              \
        if (D != 64 || G > 4) return 0;                                                        \
        switch (G) {                                                                           \
            case 1: NAME##_g(qf, k, v, table, 1, BS, s_block, t0, t1, m, l, acc); break;       \
            case 2: NAME##_g(qf, k, v, table, 2, BS, s_block, t0, t1, m, l, acc); break;       \
            case 3: NAME##_g(qf, k, v, table, 3, BS, s_block, t0, t1, m, l, acc); break;       \
            default: NAME##_g(qf, k, v, table, 4, BS, s_block, t0, t1, m, l, acc); break;      \
        }                                                                                      \
        return 1;                                                                              \
    }

#define DEFINE_NO_FAST(NAME, T)                                                                \
    static int NAME(const float* qf, const T* k, const T* v, const int64_t* table, int G,      \
                    int D, int BS, int64_t s_block, int t0, int t1, float* m, float* l,        \
                    float* acc) {                                                              \
        (void)qf, (void)k, (void)v, (void)table, (void)G, (void)D, (void)BS, (void)s_block;    \
        (void)t0, (void)t1, (void)m, (void)l, (void)acc;                                       \
        return 0;                                                                              \
    }

#ifdef __AVX512F__
static inline void prefetch_bytes(const void* p, int bytes) { /* a block, ahead of use */
    for (int i = 0; i < bytes; i += 64) _mm_prefetch((const char*)p + i, _MM_HINT_T0);
}

typedef struct { __m512 v[4][4]; } q_f32;

static inline void prep_f32(const float* qf, int G, q_f32* q) {
    for (int g = 0; g < G; g++)
        for (int i = 0; i < 4; i++) q->v[g][i] = _mm512_loadu_ps(qf + g * 64 + 16 * i);
}

static inline float score_f32(const q_f32* q, int g, const float* kp) {
    __m512 a = _mm512_mul_ps(q->v[g][0], _mm512_loadu_ps(kp));
    for (int i = 1; i < 4; i++) a = _mm512_fmadd_ps(q->v[g][i], _mm512_loadu_ps(kp + 16 * i), a);
    return _mm512_reduce_add_ps(a);
}

static inline __m512 row16_f32(const float* p) { return _mm512_loadu_ps(p); }

DEFINE_FAST(item_f32_fast, float, f32)
#else
DEFINE_NO_FAST(item_f32_fast, float)
#endif

#ifdef __AVX512BF16__
typedef struct { __m512bh a[4], b[4]; } q_bf16; /* each head's 64 values as two bf16 halves */

static inline void prep_bf16(const float* qf, int G, q_bf16* q) {
    for (int g = 0; g < G; g++) {
        const float* x = qf + g * 64;
        q->a[g] = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
        q->b[g] = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 48), _mm512_loadu_ps(x + 32));
    }
}

static inline float score_bf16(const q_bf16* q, int g, const uint16_t* kp) {
    __m512bh ka = (__m512bh)_mm512_loadu_si512(kp), kb = (__m512bh)_mm512_loadu_si512(kp + 32);
    __m512 a = _mm512_dpbf16_ps(_mm512_setzero_ps(), q->a[g], ka);
    return _mm512_reduce_add_ps(_mm512_dpbf16_ps(a, q->b[g], kb));
}

static inline __m512 row16_bf16(const uint16_t* p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

DEFINE_FAST(item_bf16_fast, uint16_t, bf16)
#else
DEFINE_NO_FAST(item_bf16_fast, uint16_t)
#endif

/* The driver: items over the threads, then the chunks of each (sequence, head) joined. */
#define DEFINE_DECODE(NAME, T, TO_F, FROM_F, ITEM, FAST)                                      \
    int NAME(PC_DECODE_ARGS(T)) {                                                             \
        int G = H / KV, chunks = 0;                                                           \
        if (G > MAXG || D > MAXD || G * KV != H || threads < 1 || threads > 4096) return 1;   \
        for (int b = 0; b < B; b++) {                                                         \
            int c = (int)((ctx[b] + CHUNK - 1) / CHUNK);                                      \
            chunks = c > chunks ? c : chunks;                                                 \
        }                                                                                     \
        int items = B * KV * chunks, per = G * (D + 2);                                       \
        float* part = malloc(sizeof(float) * (size_t)items * per);                            \
        if (!part) return 2;                                                                  \
        _Pragma("omp parallel for schedule(dynamic, 1) num_threads(threads)")                 \
        for (int it = 0; it < items; it++) {                                                  \
            int c = it % chunks, h = (it / chunks) % KV, b = it / (chunks * KV);              \
            float *m = part + (size_t)it * per, *l = m + G, *acc = l + G;                     \
            int t0 = c * CHUNK, t1 = t0 + CHUNK < ctx[b] ? t0 + CHUNK : (int)ctx[b];          \
            if (t0 >= t1) {                                                                   \
                for (int g = 0; g < G; g++) m[g] = -FLT_MAX, l[g] = 0.f;                      \
                continue;                                                                     \
            }                                                                                 \
            float qf[MAXG * MAXD];                                                            \
            for (int g = 0; g < G; g++)                                                       \
                for (int d = 0; d < D; d++)                                                   \
                    qf[g * D + d] = TO_F(q[b * q_sb + (h * G + g) * q_sh + d]) * scale;       \
            const int64_t* table = tables + b * t_sb;                                         \
            const T *kh = k + h * s_head, *vh = v + h * s_head;                               \
            if (!FAST(qf, kh, vh, table, G, D, BS, s_block, t0, t1, m, l, acc))               \
                ITEM(qf, kh, vh, table, G, D, BS, s_block, t0, t1, m, l, acc);                \
        }                                                                                     \
        _Pragma("omp parallel for num_threads(threads)")                                      \
        for (int bh = 0; bh < B * KV; bh++) {                                                 \
            int b = bh / KV, h = bh % KV;                                                     \
            for (int g = 0; g < G; g++) {                                                     \
                float M = -FLT_MAX, L = 0.f, o[MAXD];                                         \
                for (int c = 0; c < chunks; c++) {                                            \
                    float mc = part[(size_t)(bh * chunks + c) * per + g];                     \
                    M = mc > M ? mc : M;                                                      \
                }                                                                             \
                memset(o, 0, sizeof(float) * D);                                              \
                for (int c = 0; c < chunks; c++) {                                            \
                    float *m = part + (size_t)(bh * chunks + c) * per, *l = m + G;            \
                    float *acc = l + G + g * D, w;                                            \
                    if (l[g] == 0.f) continue;                                                \
                    w = expf(m[g] - M);                                                       \
                    L += w * l[g];                                                            \
                    for (int d = 0; d < D; d++) o[d] += w * acc[d];                           \
                }                                                                             \
                T* op = out + b * o_sb + (h * G + g) * o_sh;                                  \
                for (int d = 0; d < D; d++) op[d] = FROM_F(L > 0.f ? o[d] / L : 0.f);         \
            }                                                                                 \
        }                                                                                     \
        free(part);                                                                           \
        return 0;                                                                             \
    }

DEFINE_DECODE(pc_decode_bf16, uint16_t, bf2f, f2bf, item_bf16, item_bf16_fast)
DEFINE_DECODE(pc_decode_f32, float, f2f, f2f, item_f32, item_f32_fast)
