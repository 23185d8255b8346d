/* y = x W^T for a few rows of x, W read as 4-bit codes with a scale and a minimum per 32
 * weights (GGUF's Q4_1, and Q4_0 with minimum -8 * scale): each weight is read once per
 * call, whatever the number of rows, and never widened in memory.
 *
 * Layout, packed once at load by promptcache.model.cpu_q4 (N padded to a multiple of 16
 * with zero codes, scales and minima; K a multiple of 32):
 *   codes (N/16, K/32, 16, 16) bytes: tile t of 16 outputs, block b of 32 inputs, row kk,
 *       column n: the code of W[16t + n][32b + kk] in the low nibble and that of
 *       W[16t + n][32b + kk + 16] in the high nibble;
 *   scale, low (N/16, K/32, 16) float32: W[n][k] = scale * code + low.
 * Per tile and block the codes' dot products with x come first (exact small integers
 * times x), then y += scale * dot + low * sum(x over the block).
 *
 * x (M, K) and y (M, N) are float32 (dtype 0) or bfloat16 (dtype 1), rows `x_stride` and
 * `y_stride` elements apart; sums are float32, y is rounded to x's dtype at the end.
 * OpenMP threads (PyTorch's intra-op count) share the tiles; rows go in groups of 8.
 *
 * Paths: on AVX512-BF16 with bfloat16 x, codes become bfloat16 in registers (a table
 * lookup) and dpbf16 takes the dot products, 32 products an instruction. Otherwise, on
 * AVX2 with FMA, codes become floats in registers and x (as float32) goes through 256-bit
 * FMAs, 4 rows at a time. Elsewhere plain loops over the 16 columns of a tile, vectorized
 * by the compiler for whatever the CPU has (built with -O3 -march=native).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "dispatch.h"

#if defined(__AVX2__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#define TILE 16
#define GROUP 32
#define ROWS 8
#define TILE_BYTES (TILE * TILE) /* 16 rows kk x 16 columns */

typedef struct {
    const uint8_t* codes;
    const float* scale;
    const float* low;
    int kb;            /* K / 32 */
    const float* xf;   /* (M, K) x as float32 (generic path) */
    const uint16_t* xh; /* x as bfloat16 (dpbf16 path), row stride x_stride */
    int64_t x_stride;
    const float* xs;   /* (M, K/32) sums of x per block */
    int K;
} Weights;

/* One tile's 16 outputs for rows r0 .. r0+R-1, generic loops. */
static inline __attribute__((always_inline)) void tile_generic(const Weights* w, int t, int r0,
                                                                const int R, float* y) {
    float acc[ROWS][TILE] = {{0}};
    for (int b = 0; b < w->kb; b++) {
        const uint8_t* p = w->codes + ((int64_t)t * w->kb + b) * TILE_BYTES;
        float part[ROWS][TILE] = {{0}};
        for (int kk = 0; kk < TILE; kk++) {
            float lo[TILE], hi[TILE];
            for (int n = 0; n < TILE; n++) {
                lo[n] = (float)(p[kk * TILE + n] & 15);
                hi[n] = (float)(p[kk * TILE + n] >> 4);
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const float* xr = w->xf + (int64_t)(r0 + r) * w->K + b * GROUP;
                float x0 = xr[kk], x1 = xr[kk + TILE];
                for (int n = 0; n < TILE; n++) part[r][n] += lo[n] * x0 + hi[n] * x1;
            }
        }
        const float* d = w->scale + ((int64_t)t * w->kb + b) * TILE;
        const float* m = w->low + ((int64_t)t * w->kb + b) * TILE;
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            float s = w->xs[(int64_t)(r0 + r) * w->kb + b];
            for (int n = 0; n < TILE; n++) acc[r][n] += part[r][n] * d[n] + m[n] * s;
        }
    }
    for (int r = 0; r < R; r++) memcpy(y + r * TILE, acc[r], sizeof acc[r]);
}

/* unused where both hand-vectorized paths exist */
__attribute__((unused)) static void rows_generic(const Weights* w, int t, int r0, int R,
                                                  float* y) {
    DISPATCH(tile_generic, w, t, r0, R, y)
}

#if defined(__AVX2__) || defined(__AVX512BF16__)
/* The codes of the block 4 blocks ahead of p (256 bytes, 4 cache lines) into L1. */
static inline void prefetch_ahead(const uint8_t* p) {
    for (int line = 0; line < TILE_BYTES; line += 64)
        _mm_prefetch((const char*)(p + 4 * TILE_BYTES + line), _MM_HINT_T0);
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
#define HAS_F32_PATH 1
/* One tile's 16 outputs (two 8-float halves) for R <= 4 rows of float32 x: each row kk's
 * 16 codes widened to floats in registers, two FMAs a half per row. */
static inline __attribute__((always_inline)) void tile_f32(const Weights* w, int t, int r0,
                                                            const int R, float* y) {
    const __m256i mask = _mm256_set1_epi32(15);
    __m256 acc[4][2];
    for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int b = 0; b < w->kb; b++) {
        const uint8_t* p = w->codes + ((int64_t)t * w->kb + b) * TILE_BYTES;
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
        const int64_t at = ((int64_t)t * w->kb + b) * TILE;
        for (int h = 0; h < 2; h++) {
            __m256 d = _mm256_loadu_ps(w->scale + at + 8 * h);
            __m256 m = _mm256_loadu_ps(w->low + at + 8 * h);
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
        int n = R - r < 4 ? R - r : 4;
        switch (n) {
            case 1: tile_f32(w, t, r0 + r, 1, y + r * TILE); break;
            case 2: tile_f32(w, t, r0 + r, 2, y + r * TILE); break;
            case 3: tile_f32(w, t, r0 + r, 3, y + r * TILE); break;
            default: tile_f32(w, t, r0 + r, 4, y + r * TILE); break;
        }
    }
}
#else
#define HAS_F32_PATH 0
static void rows_f32(const Weights* w, int t, int r0, int R, float* y) {
    rows_generic(w, t, r0, R, y);
}
#endif

#ifdef __AVX512BF16__
#define HAS_BF16_PATH 1
/* One tile's 16 outputs for R rows: codes to bfloat16 by a 32-entry table (entry i is
 * i & 15, so the high nibble's bit is ignored), columns of rows kk and kk+1 interleaved
 * into dpbf16's pairs. */
static inline __attribute__((always_inline)) void tile_bf16(const Weights* w, int t, int r0,
                                                             const int R, float* y) {
    const __m512i lut = _mm512_set_epi16(
        0x4170, 0x4160, 0x4150, 0x4140, 0x4130, 0x4120, 0x4110, 0x4100, 0x40E0, 0x40C0,
        0x40A0, 0x4080, 0x4040, 0x4000, 0x3F80, 0x0000, 0x4170, 0x4160, 0x4150, 0x4140,
        0x4130, 0x4120, 0x4110, 0x4100, 0x40E0, 0x40C0, 0x40A0, 0x4080, 0x4040, 0x4000,
        0x3F80, 0x0000);
    /* word 2n <- word n (row kk, column n), word 2n+1 <- word 16+n (row kk+1) */
    const __m512i pairs = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25,
                                           9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2,
                                           17, 1, 16, 0);
    __m512 acc[ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < w->kb; b++) {
        const uint8_t* p = w->codes + ((int64_t)t * w->kb + b) * TILE_BYTES;
        __m512 part[ROWS];
        for (int r = 0; r < R; r++) part[r] = _mm512_setzero_ps();
        prefetch_ahead(p);
        for (int kk = 0; kk < TILE; kk += 2) {
            __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(p + kk * TILE)));
            v = _mm512_permutexvar_epi16(pairs, v);
            __m512bh lo = (__m512bh)_mm512_permutexvar_epi16(v, lut);
            __m512bh hi = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(v, 4), lut);
            for (int r = 0; r < R; r++) {
                const uint16_t* xr = w->xh + (int64_t)(r0 + r) * w->x_stride + b * GROUP + kk;
                int32_t x0, x1;
                memcpy(&x0, xr, 4);
                memcpy(&x1, xr + TILE, 4);
                part[r] = _mm512_dpbf16_ps(part[r], lo, (__m512bh)_mm512_set1_epi32(x0));
                part[r] = _mm512_dpbf16_ps(part[r], hi, (__m512bh)_mm512_set1_epi32(x1));
            }
        }
        const int64_t at = ((int64_t)t * w->kb + b) * TILE;
        __m512 d = _mm512_loadu_ps(w->scale + at), m = _mm512_loadu_ps(w->low + at);
        for (int r = 0; r < R; r++) {
            __m512 s = _mm512_set1_ps(w->xs[(int64_t)(r0 + r) * w->kb + b]);
            acc[r] = _mm512_fmadd_ps(part[r], d, _mm512_fmadd_ps(m, s, acc[r]));
        }
    }
    for (int r = 0; r < R; r++) _mm512_storeu_ps(y + r * TILE, acc[r]);
}

static void rows_bf16(const Weights* w, int t, int r0, int R, float* y) {
    DISPATCH(tile_bf16, w, t, r0, R, y)
}
#else
#define HAS_BF16_PATH 0
static void rows_bf16(const Weights* w, int t, int r0, int R, float* y) {
    rows_generic(w, t, r0, R, y);
}
#endif

/* Which paths this build has: 1 dpbf16 for bfloat16 x, 2 AVX2 FMA for float32 x. */
int pc_q4_paths(void) { return HAS_BF16_PATH | (HAS_F32_PATH << 1); }

/* x's rows as float32 (generic path) and their sums per block of 32. */
static void prepare(const void* x, int dtype, int64_t x_stride, int M, int K, float* xf,
                    float* xs) {
    for (int r = 0; r < M; r++) {
        float* row = xf + (int64_t)r * K;
        if (dtype == 1) {
            const uint16_t* xr = (const uint16_t*)x + r * x_stride;
            for (int k = 0; k < K; k++) row[k] = bf2f(xr[k]);
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
int pc_q4_matmul(const void* x, int dtype, int64_t x_stride, int M, const uint8_t* codes,
                 const float* scale, const float* low, int N, int K, void* y, int64_t y_stride,
                 int threads) {
    if (M < 1 || N < 1 || K < GROUP || K % GROUP || (dtype != 0 && dtype != 1) ||
        threads < 1 || threads > 4096)
        return 1;
    float* xf = malloc(sizeof(float) * ((size_t)M * K + (size_t)M * (K / GROUP)));
    if (!xf) return 2;
    float* xs = xf + (size_t)M * K;
    prepare(x, dtype, x_stride, M, K, xf, xs);
    Weights w = {codes, scale, low, K / GROUP, xf, (const uint16_t*)x, x_stride, xs, K};
    const int tiles = (N + TILE - 1) / TILE;
    const int fast = dtype == 1 && HAS_BF16_PATH;
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
                if (dtype == 1) {
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
