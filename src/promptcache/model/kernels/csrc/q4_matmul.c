/* y = x W^T for a few rows of x, W read as 4-bit codes with a scale and a minimum per 32
 * weights (GGUF's Q4_1, and Q4_0 with minimum -8 * scale): each weight is read once per
 * call, whatever the number of rows, and never widened in memory.
 *
 * Two layouts, packed once at load by promptcache.model.kernels.q4_matmul as pc_q4_layout()
 * says (N padded to a multiple of 16 with zero codes, scales and minima; K a multiple of 32):
 * tile t of 16 outputs, block b of 32 inputs, 256 bytes of codes each, then
 *   layout 1 (AVX512 and generic builds): codes (N/16, K/32, 4, 16) 32-bit lanes, lane q
 *       of column n holding the codes of W[16t + n][32b + 8q + j], j = 0..7, in bits
 *       4j..4j+3 (so one 64-byte load holds 8 inputs of all 16 columns); scale and low
 *       (N/16, K/32, 16) float32 stored as 16 * scale and low - 16 * scale. A code c becomes
 *       the float 1 + c/16 in registers by a shift (c to the top of a mantissa) and one
 *       and-or (the exponent of 1): no table, no conversion. Per tile and block the dot
 *       products of x with these come first; as sum x (1 + c/16) = s + (sum x c) / 16, s
 *       the block's sum of x, y += scale16 * dot + low16 * s is x times the weights.
 *   layout 0 (AVX2 builds without AVX512F): codes (N/16, K/32, 16, 16) bytes, row kk and
 *       column n holding the code of W[16t + n][32b + kk] in the low nibble and that of
 *       W[16t + n][32b + kk + 16] in the high one (a zero-extending load of 8 bytes gives
 *       8 columns' codes); scale and low as they are; y += scale * dot + low * s.
 *
 * x (M, K) and y (M, N) are float32 (dtype 0) or bfloat16 (dtype 1), rows `x_stride` and
 * `y_stride` elements apart; sums are float32, y is rounded to x's dtype at the end.
 * OpenMP threads (PyTorch's intra-op count) share the tiles; rows go in groups of 8.
 *
 * Paths: on AVX512-BF16 with bfloat16 x, dpbf16 takes the dot products, 32 an instruction
 * (a lane's two 16-bit halves give codes j and j + 4, and x's bfloat16 copy is reordered
 * to pair its inputs so). Float32 x (bfloat16 x elsewhere, as float32) goes through
 * 512-bit FMAs on AVX512F, 256-bit ones on AVX2 with FMA (4 rows at a time), and plain
 * loops the compiler vectorizes on other CPUs (built with -O3 -march=native).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "dispatch.h"
#include "kernels.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#define TILE 16
#define GROUP 32
#define ROWS 8
#define LANES 4 /* 32-bit lanes of 8 codes per column and block */
#define INLINE static inline __attribute__((always_inline))

typedef struct {
    const uint8_t* codes;
    const float* scale; /* as packed for this build's layout (see above) */
    const float* low;
    int kb;             /* K / 32 */
    const float* xf;    /* (M, K) x as float32 */
    const uint16_t* xh; /* (M, K) x as bfloat16, inputs 0 4 1 5 2 6 3 7 of each 8 */
    const float* xs;    /* (M, K/32) sums of x per block */
    int K;
} Weights;

INLINE const uint8_t* block_bytes(const Weights* w, int t, int b) {
    return w->codes + ((int64_t)t * w->kb + b) * (TILE * GROUP / 2);
}

INLINE const uint32_t* block_codes(const Weights* w, int t, int b) {
    return (const uint32_t*)block_bytes(w, t, b);
}

INLINE int64_t block_at(const Weights* w, int t, int b) {
    return ((int64_t)t * w->kb + b) * TILE;
}

/* Parts (independent sums) per row: one row alone would wait on each FMA's latency. */
#define PARTS(R) ((R) == 1 ? 4 : (R) <= 3 ? 2 : 1)

/* One tile's 16 outputs for rows r0 .. r0+R-1, generic loops. */
INLINE void tile_generic(const Weights* w, int t, int r0, const int R, float* y) {
    float acc[ROWS][TILE] = {{0}};
    for (int b = 0; b < w->kb; b++) {
        const uint32_t* p = block_codes(w, t, b);
        float part[ROWS][TILE] = {{0}};
        for (int q = 0; q < LANES; q++) {
            for (int j = 0; j < 8; j++) {
                float f[TILE];
                for (int n = 0; n < TILE; n++)
                    f[n] = 1.0f + (float)((p[q * TILE + n] >> (4 * j)) & 15) * 0.0625f;
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    float xv = w->xf[(int64_t)(r0 + r) * w->K + b * GROUP + 8 * q + j];
                    for (int n = 0; n < TILE; n++) part[r][n] += f[n] * xv;
                }
            }
        }
        const float* d = w->scale + block_at(w, t, b);
        const float* m = w->low + block_at(w, t, b);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            float s = w->xs[(int64_t)(r0 + r) * w->kb + b];
            for (int n = 0; n < TILE; n++) acc[r][n] += part[r][n] * d[n] + m[n] * s;
        }
    }
    for (int r = 0; r < R; r++) memcpy(y + r * TILE, acc[r], sizeof acc[r]);
}

#if defined(__AVX2__)
/* The codes of the block 4 blocks ahead of p (256 bytes, 4 cache lines) into L1. */
INLINE void prefetch_ahead(const void* p) {
    const char* c = (const char*)p + 4 * TILE * GROUP / 2;
    for (int line = 0; line < TILE * GROUP / 2; line += 64) _mm_prefetch(c + line, _MM_HINT_T0);
}
#endif

#if defined(__AVX512F__)
#define HAS_512_PATH 1
#define HAS_AVX2_PATH 0
/* A block's end for the 512-bit paths: each row's P partial sums added, then
 * acc += scale16 * dot + low16 * (the block's sum of x). */
INLINE void block_end(const Weights* w, int t, int b, int r0, const int R, const int P,
                      const __m512* part, __m512* acc) {
    __m512 d = _mm512_loadu_ps(w->scale + block_at(w, t, b));
    __m512 m = _mm512_loadu_ps(w->low + block_at(w, t, b));
    for (int r = 0; r < R; r++) {
        __m512 dot = part[r * P];
        for (int i = 1; i < P; i++) dot = _mm512_add_ps(dot, part[r * P + i]);
        __m512 s = _mm512_set1_ps(w->xs[(int64_t)(r0 + r) * w->kb + b]);
        acc[r] = _mm512_fmadd_ps(dot, d, _mm512_fmadd_ps(m, s, acc[r]));
    }
}

/* Code j of each lane as the float 1 + c/16: c shifted to mantissa bits 19..22, the rest
 * cleared and the exponent of 1 set by one ternary-logic op ((a & b) | c). */
INLINE __m512 unit_f32x16(__m512i v, const int j) {
    __m512i t = j <= 4 ? _mm512_slli_epi32(v, 19 - 4 * j) : _mm512_srli_epi32(v, 4 * j - 19);
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(t, _mm512_set1_epi32(0x00780000),
                                                         _mm512_set1_epi32(0x3F800000), 0xEA));
}

/* One tile's 16 outputs (one register) for R rows of float32 x. */
INLINE void tile_f32x16(const Weights* w, int t, int r0, const int R, float* y) {
    const int P = PARTS(R);
    __m512 acc[ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < w->kb; b++) {
        const uint32_t* p = block_codes(w, t, b);
        const float* x = w->xf + (int64_t)r0 * w->K + b * GROUP;
        __m512 part[ROWS * 4];
        for (int i = 0; i < R * P; i++) part[i] = _mm512_setzero_ps();
        prefetch_ahead(p);
        for (int q = 0; q < LANES; q++) {
            __m512i v = _mm512_loadu_si512(p + q * TILE);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                __m512 f = unit_f32x16(v, j);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    __m512 xv = _mm512_set1_ps(x[(int64_t)r * w->K + 8 * q + j]);
                    part[r * P + j % P] = _mm512_fmadd_ps(f, xv, part[r * P + j % P]);
                }
            }
        }
        block_end(w, t, b, r0, R, P, part, acc);
    }
    for (int r = 0; r < R; r++) _mm512_storeu_ps(y + r * TILE, acc[r]);
}

static void rows_f32(const Weights* w, int t, int r0, int R, float* y) {
    DISPATCH(tile_f32x16, w, t, r0, R, y)
}
#elif defined(__AVX2__) && defined(__FMA__)
#define HAS_512_PATH 0
#define HAS_AVX2_PATH 1
/* One tile's 16 outputs (two 8-float halves) for R <= 4 rows of float32 x, codes in
 * layout 0: each row kk's 16 codes widened to floats in registers (a zero-extending load,
 * an and or a shift, a conversion), two FMAs a half per row. */
INLINE void tile_f32x8(const Weights* w, int t, int r0, const int R, float* y) {
    const __m256i mask = _mm256_set1_epi32(15);
    __m256 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int b = 0; b < w->kb; b++) {
        const uint8_t* p = block_bytes(w, t, b);
        __m256 part[4][2];
        for (int r = 0; r < R; r++) part[r][0] = part[r][1] = _mm256_setzero_ps();
        prefetch_ahead(p);
        for (int kk = 0; kk < TILE; kk++) {
            __m256i c0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p + kk * TILE)));
            __m256i c1 =
                _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(p + kk * TILE + 8)));
            __m256 lo0 = _mm256_cvtepi32_ps(_mm256_and_si256(c0, mask));
            __m256 lo1 = _mm256_cvtepi32_ps(_mm256_and_si256(c1, mask));
            __m256 hi0 = _mm256_cvtepi32_ps(_mm256_srli_epi32(c0, 4));
            __m256 hi1 = _mm256_cvtepi32_ps(_mm256_srli_epi32(c1, 4));
            for (int r = 0; r < R; r++) {
                const float* xr = w->xf + (int64_t)(r0 + r) * w->K + b * GROUP + kk;
                __m256 x0 = _mm256_broadcast_ss(xr), x1 = _mm256_broadcast_ss(xr + TILE);
                part[r][0] = _mm256_fmadd_ps(hi0, x1, _mm256_fmadd_ps(lo0, x0, part[r][0]));
                part[r][1] = _mm256_fmadd_ps(hi1, x1, _mm256_fmadd_ps(lo1, x0, part[r][1]));
            }
        }
        for (int h = 0; h < 2; h++) {
            __m256 d = _mm256_loadu_ps(w->scale + block_at(w, t, b) + 8 * h);
            __m256 m = _mm256_loadu_ps(w->low + block_at(w, t, b) + 8 * h);
            for (int r = 0; r < R; r++) {
                __m256 s = _mm256_set1_ps(w->xs[(int64_t)(r0 + r) * w->kb + b]);
                acc[r][h] = _mm256_fmadd_ps(part[r][h], d, _mm256_fmadd_ps(m, s, acc[r][h]));
            }
        }
    }
    for (int r = 0; r < R; r++) {
        _mm256_storeu_ps(y + r * TILE, acc[r][0]);
        _mm256_storeu_ps(y + r * TILE + 8, acc[r][1]);
    }
}

static void rows_f32(const Weights* w, int t, int r0, int R, float* y) {
    for (int r = 0; r < R; r += 4) {
        switch (R - r < 4 ? R - r : 4) {
            case 1: tile_f32x8(w, t, r0 + r, 1, y + r * TILE); break;
            case 2: tile_f32x8(w, t, r0 + r, 2, y + r * TILE); break;
            case 3: tile_f32x8(w, t, r0 + r, 3, y + r * TILE); break;
            default: tile_f32x8(w, t, r0 + r, 4, y + r * TILE); break;
        }
    }
}
#else
#define HAS_512_PATH 0
#define HAS_AVX2_PATH 0
static void rows_f32(const Weights* w, int t, int r0, int R, float* y) {
    DISPATCH(tile_generic, w, t, r0, R, y)
}
#endif

#ifdef __AVX512BF16__
#define HAS_BF16_PATH 1
/* Codes j (low 16 bits) and j + 4 (high 16 bits) of each lane as the bfloat16 pair
 * 1 + c/16 (0x3F80 | c << 3), j = 0..3: a shift, then one ternary-logic op. */
INLINE __m512bh unit_bf16(__m512i v, const int j) {
    __m512i t = j == 0 ? _mm512_slli_epi32(v, 3) : _mm512_srli_epi32(v, 4 * j - 3);
    return (__m512bh)_mm512_ternarylogic_epi32(t, _mm512_set1_epi32(0x00780078),
                                               _mm512_set1_epi32(0x3F803F80), 0xEA);
}

/* One tile's 16 outputs for R rows of bfloat16 x: dpbf16 of the code pairs (j, j + 4)
 * with x's matching pairs, 32 products an instruction. */
INLINE void tile_bf16(const Weights* w, int t, int r0, const int R, float* y) {
    const int P = PARTS(R);
    __m512 acc[ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < w->kb; b++) {
        const uint32_t* p = block_codes(w, t, b);
        const uint16_t* x = w->xh + (int64_t)r0 * w->K + b * GROUP;
        __m512 part[ROWS * 4];
        for (int i = 0; i < R * P; i++) part[i] = _mm512_setzero_ps();
        prefetch_ahead(p);
        for (int q = 0; q < LANES; q++) {
            __m512i v = _mm512_loadu_si512(p + q * TILE);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m512bh f = unit_bf16(v, j);
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    int32_t pair;
                    memcpy(&pair, x + (int64_t)r * w->K + 8 * q + 2 * j, 4);
                    __m512bh xv = (__m512bh)_mm512_set1_epi32(pair);
                    part[r * P + j % P] = _mm512_dpbf16_ps(part[r * P + j % P], f, xv);
                }
            }
        }
        block_end(w, t, b, r0, R, P, part, acc);
    }
    for (int r = 0; r < R; r++) _mm512_storeu_ps(y + r * TILE, acc[r]);
}

static void rows_bf16(const Weights* w, int t, int r0, int R, float* y) {
    DISPATCH(tile_bf16, w, t, r0, R, y)
}
#else
#define HAS_BF16_PATH 0
static void rows_bf16(const Weights* w, int t, int r0, int R, float* y) {
    rows_f32(w, t, r0, R, y);
}
#endif

/* Which paths this build has: 1 dpbf16 for bfloat16 x, 2 AVX2 FMA and 4 AVX512F FMA for
 * float32 x. */
int pc_q4_paths(void) { return HAS_BF16_PATH | (HAS_AVX2_PATH << 1) | (HAS_512_PATH << 2); }

/* The layout this build reads (see the top of this file). */
int pc_q4_layout(void) { return HAS_AVX2_PATH ? 0 : 1; }

/* x's rows as float32, their sums per block of 32, and (bfloat16 x for dpbf16) x's
 * bfloat16 copy with the inputs of each 8 in the order the codes pair them: 0 4 1 5 2 6 3 7. */
static void prepare(const void* x, int dtype, int64_t x_stride, int M, int K, float* xf,
                    float* xs, uint16_t* xh) {
    for (int r = 0; r < M; r++) {
        float* row = xf + (int64_t)r * K;
        if (dtype == PC_BF16) {
            const uint16_t* xr = (const uint16_t*)x + r * x_stride;
            for (int k = 0; k < K; k++) row[k] = bf2f(xr[k]);
            if (xh)
                for (int k = 0; k < K; k += 8)
                    for (int j = 0; j < 4; j++) {
                        xh[(int64_t)r * K + k + 2 * j] = xr[k + j];
                        xh[(int64_t)r * K + k + 2 * j + 1] = xr[k + j + 4];
                    }
        } else {
            memcpy(row, (const float*)x + r * x_stride, sizeof(float) * K);
        }
        for (int b = 0; b < K / GROUP; b++) {
            float s = 0.f;
            for (int i = 0; i < GROUP; i++) s += row[b * GROUP + i];
            xs[(int64_t)r * (K / GROUP) + b] = s;
        }
    }
}

/* y (M, N) = x (M, K) W^T. Returns 0, or 1 for bad arguments, 2 when out of memory. */
int pc_q4_matmul(PC_Q4_MATMUL_ARGS(void)) {
    if (M < 1 || N < 1 || K < GROUP || K % GROUP || (dtype != PC_F32 && dtype != PC_BF16) ||
        threads < 1 || threads > 4096)
        return 1;
    const int fast = dtype == PC_BF16 && HAS_BF16_PATH;
    const size_t floats = (size_t)M * K + (size_t)M * (K / GROUP);
    float* xf = malloc(sizeof(float) * floats + (fast ? sizeof(uint16_t) * M * K : 0));
    if (!xf) return 2;
    float* xs = xf + (size_t)M * K;
    uint16_t* xh = fast ? (uint16_t*)(xf + floats) : NULL;
    prepare(x, dtype, x_stride, M, K, xf, xs, xh);
    Weights w = {codes, scale, low, K / GROUP, xf, xh, xs, K};
    const int tiles = (N + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int t = 0; t < tiles; t++) {
        float out[ROWS * TILE];
        const int width = N - t * TILE < TILE ? N - t * TILE : TILE;
        for (int r0 = 0; r0 < M; r0 += ROWS) {
            const int R = M - r0 < ROWS ? M - r0 : ROWS;
            if (fast)
                rows_bf16(&w, t, r0, R, out);
            else
                rows_f32(&w, t, r0, R, out);
            for (int r = 0; r < R; r++) {
                const int64_t at = (int64_t)(r0 + r) * y_stride + (int64_t)t * TILE;
                if (dtype == PC_BF16) {
                    uint16_t* yr = (uint16_t*)y + at;
                    for (int n = 0; n < width; n++) yr[n] = f2bf(out[r * TILE + n]);
                } else {
                    memcpy((float*)y + at, out + r * TILE, sizeof(float) * width);
                }
            }
        }
    }
    free(xf);
    return 0;
}
