/* y = x W^T for a few rows of x, W read as 8-bit codes with a scale per 32 weights (GGUF's
 * Q8_0: w = scale * code, code in -128..127): the LM head of a 4-bit GGUF model, whose
 * tied embeddings are stored so. Each weight is read once per call, whatever the rows.
 *
 * Layout, packed once at load by promptcache.model.kernels.q8_matmul (N padded to a multiple of 16
 * with zero codes and scales; K a multiple of 32):
 *   codes (N/16, K/32, 16, 16, 2) int8: tile t of 16 outputs, block b of 32 inputs, pair
 *       p, column n, then W[16t + n][32b + 2p] and W[16t + n][32b + 2p + 1];
 *   scale (N/16, K/32, 16) float32.
 *
 * x (M, K), float32 (dtype 0) or bfloat16 (dtype 1), rows `x_stride` elements apart, is
 * first rounded to 16-bit integers per block of 32 (x = sx * xi, sx = the block's max |x|
 * / 32767: below bfloat16's own rounding for every element within 2^7 of its block's
 * largest). Float32 x also gets a second row of integers for what that left out, at
 * 1/32767 of the scale, so that its rounding is ~2^-30 of the block's largest. Per tile
 * and block the integer dot products are exact (32-bit sums of at most 32 products of 8
 * and 16 bits); then y += scale * sx * dot. y (M, N) is float32, rows `y_stride` apart.
 * OpenMP threads (PyTorch's intra-op count) share the tiles; integer rows go in groups
 * of 8.
 *
 * Paths: on AVX512-VNNI vpdpwssd takes 32 products an instruction (16 columns x a pair of
 * inputs); elsewhere plain loops the compiler vectorizes (built with -O3 -march=native).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"
#include "dispatch.h"
#include "kernels.h"

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define HAS_VNNI_PATH 1
#else
#define HAS_VNNI_PATH 0
#endif

#define TILE 16
#define GROUP 32
#define ROWS 8
#define BLOCK_BYTES (TILE * GROUP) /* 16 pairs x 16 columns x 2 */

typedef struct {
    const int8_t* codes;
    const float* scale;
    int kb;            /* K / 32 */
    const int16_t* xi; /* (M, K) x as 16-bit integers */
    const float* sx;   /* (M, K/32) their scales */
    int K;
} Weights;

/* One tile's 16 outputs for rows r0 .. r0+R-1, generic loops. */
static inline __attribute__((always_inline)) void tile_generic(const Weights* w, int t, int r0,
                                                                const int R, float* y) {
    float acc[ROWS][TILE] = {{0}};
    for (int b = 0; b < w->kb; b++) {
        const int8_t* p = w->codes + ((int64_t)t * w->kb + b) * BLOCK_BYTES;
        const float* d = w->scale + ((int64_t)t * w->kb + b) * TILE;
        for (int r = 0; r < R; r++) {
            const int16_t* x = w->xi + (int64_t)(r0 + r) * w->K + b * GROUP;
            int32_t dot[TILE] = {0};
            for (int q = 0; q < GROUP / 2; q++)
                for (int n = 0; n < TILE; n++)
                    dot[n] += p[(q * TILE + n) * 2] * x[2 * q] + p[(q * TILE + n) * 2 + 1] * x[2 * q + 1];
            const float s = w->sx[(int64_t)(r0 + r) * w->kb + b];
            for (int n = 0; n < TILE; n++) acc[r][n] += d[n] * s * (float)dot[n];
        }
    }
    for (int r = 0; r < R; r++) memcpy(y + r * TILE, acc[r], sizeof acc[r]);
}

#if HAS_VNNI_PATH
/* One tile's 16 outputs for R rows: a pair's 32 codes widened to 16 bits, one vpdpwssd
 * per row against the row's two inputs broadcast. */
static inline __attribute__((always_inline)) void tile_vnni(const Weights* w, int t, int r0,
                                                             const int R, float* y) {
    __m512 acc[ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (int b = 0; b < w->kb; b++) {
        const int8_t* p = w->codes + ((int64_t)t * w->kb + b) * BLOCK_BYTES;
        for (int line = 0; line < BLOCK_BYTES; line += 64)
            _mm_prefetch((const char*)(p + 4 * BLOCK_BYTES + line), _MM_HINT_T0);
        __m512i dot[ROWS];
        for (int r = 0; r < R; r++) dot[r] = _mm512_setzero_si512();
        for (int q = 0; q < GROUP / 2; q++) {
            __m512i v = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i*)(p + q * 2 * TILE)));
            for (int r = 0; r < R; r++) {
                int32_t pair;
                memcpy(&pair, w->xi + (int64_t)(r0 + r) * w->K + b * GROUP + 2 * q, 4);
                dot[r] = _mm512_dpwssd_epi32(dot[r], v, _mm512_set1_epi32(pair));
            }
        }
        __m512 d = _mm512_loadu_ps(w->scale + ((int64_t)t * w->kb + b) * TILE);
        for (int r = 0; r < R; r++) {
            const __m512 ds = _mm512_mul_ps(d, _mm512_set1_ps(w->sx[(int64_t)(r0 + r) * w->kb + b]));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r]), ds, acc[r]);
        }
    }
    for (int r = 0; r < R; r++) _mm512_storeu_ps(y + r * TILE, acc[r]);
}
#define TILE_FN tile_vnni
#else
#define TILE_FN tile_generic
#endif

static void rows(const Weights* w, int t, int r0, int R, float* y) {
    DISPATCH(TILE_FN, w, t, r0, R, y)
}

/* Which path this build has: 1 AVX512-VNNI, 0 the compiler's loops. */
int pc_q8_paths(void) { return HAS_VNNI_PATH; }

/* x's rows as 16-bit integers per block of 32 (see the top) -> xi (M * split, K) and sx
 * (M * split, K / 32); a block of zeros gets scale 0. With split 2 each row of integers is
 * followed by one for what it left out, at scale sx / 32767. */
static void int_rows(const void* x, int dtype, int64_t x_stride, int M, int K, int split,
                     int16_t* xi, float* sx) {
    const int kb = K / GROUP;
    for (int r = 0; r < M; r++) {
        for (int b = 0; b < kb; b++) {
            float v[GROUP], top = 0.f;
            for (int i = 0; i < GROUP; i++) {
                const int64_t at = r * x_stride + b * GROUP + i;
                v[i] = dtype == PC_BF16 ? bf2f(((const uint16_t*)x)[at]) : ((const float*)x)[at];
                top = fmaxf(top, fabsf(v[i]));
            }
            const int64_t row = (int64_t)r * split;
            sx[row * kb + b] = top / 32767.f;
            const float inv = top > 0.f ? 32767.f / top : 0.f;
            int16_t* q = xi + row * K + b * GROUP;
            for (int i = 0; i < GROUP; i++) q[i] = (int16_t)lrintf(v[i] * inv);
            if (split == 1) continue;
            sx[(row + 1) * kb + b] = top / (32767.f * 32767.f);
            for (int i = 0; i < GROUP; i++) /* |v * inv - q| <= 1/2: within +-16384 */
                q[K + i] = (int16_t)lrintf((v[i] * inv - (float)q[i]) * 32767.f);
        }
    }
}

/* y (M, N) float32 = x (M, K) W^T. Returns 0, or 1 for bad arguments, 2 when out of memory. */
int pc_q8_matmul(const void* x, int dtype, int64_t x_stride, int M, const int8_t* codes,
                 const float* scale, int N, int K, float* y, int64_t y_stride, int threads) {
    if (M < 1 || N < 1 || K < GROUP || K % GROUP || K > 65536 || (dtype != PC_F32 && dtype != PC_BF16) ||
        threads < 1 || threads > 4096)
        return 1;
    const int split = dtype == PC_F32 ? 2 : 1, M2 = M * split; /* rows of integers */
    int16_t* xi = malloc(sizeof(int16_t) * (size_t)M2 * K);
    float* sx = malloc(sizeof(float) * (size_t)M2 * (K / GROUP));
    if (!xi || !sx) {
        free(xi);
        free(sx);
        return 2;
    }
    int_rows(x, dtype, x_stride, M, K, split, xi, sx);
    Weights w = {codes, scale, K / GROUP, xi, sx, K};
    const int tiles = (N + TILE - 1) / TILE;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int t = 0; t < tiles; t++) {
        float out[ROWS * TILE];
        const int width = N - t * TILE < TILE ? N - t * TILE : TILE;
        for (int r0 = 0; r0 < M2; r0 += ROWS) { /* ROWS is even: a split row stays whole */
            const int R = M2 - r0 < ROWS ? M2 - r0 : ROWS;
            rows(&w, t, r0, R, out);
            for (int r = 0; r < R; r += split) {
                float* yr = y + (int64_t)((r0 + r) / split) * y_stride + (int64_t)t * TILE;
                for (int n = 0; n < width; n++)
                    yr[n] = out[r * TILE + n] + (split == 2 ? out[(r + 1) * TILE + n] : 0.f);
            }
        }
    }
    free(xi);
    free(sx);
    return 0;
}
