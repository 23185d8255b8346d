/* y = x W^T + b for a few float32 rows of x, W (N, K) float32 row-major as nn.Linear keeps
 * it: the weights stream from memory once per call, whatever the number of rows.
 *
 * A decode step multiplies 1-16 rows by every weight; there the time is the weights'
 * bytes. OpenMP threads (PyTorch's intra-op count) share the outputs in blocks of 4; each
 * block's 4 weight rows are read with 256-bit loads and multiplied into 2 rows of x at a
 * time (8 accumulators), the next pairs of rows reading the same 4 weight rows from L1.
 * Sums run along K in 8 lanes, joined at the end; a K that is not a multiple of 8 ends
 * in a scalar loop. Where AVX2 with FMA is missing, plain loops serve.
 *
 * x (M, K) and y (M, N) have rows `x_stride` and `y_stride` floats apart; b may be NULL.
 */
#include <stdint.h>
#include <stddef.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#define NB 4 /* outputs per block */
#define RB 2 /* rows of x per pass */

#if defined(__AVX2__) && defined(__FMA__)
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* out[r][j] = x_r . w_j for R <= 2 rows and the NB weight rows at w (K floats apart), the
 * next block's weight rows prefetched. */
static inline __attribute__((always_inline)) void block(const float* w, int K,
                                                         const float** xr, const int R,
                                                         float out[RB][NB]) {
    __m256 acc[RB][NB];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NB; j++) acc[r][j] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[NB];
        if (!(k & 15)) /* one 64-byte line of each */
            for (int j = 0; j < NB; j++)
                _mm_prefetch((const char*)(w + (int64_t)(NB + j) * K + k), _MM_HINT_T0);
        for (int j = 0; j < NB; j++) wv[j] = _mm256_loadu_ps(w + (int64_t)j * K + k);
        for (int r = 0; r < R; r++) {
            __m256 xv = _mm256_loadu_ps(xr[r] + k);
            for (int j = 0; j < NB; j++) acc[r][j] = _mm256_fmadd_ps(wv[j], xv, acc[r][j]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NB; j++) {
            float s = hsum(acc[r][j]);
            for (int kk = k; kk < K; kk++) s += w[(int64_t)j * K + kk] * xr[r][kk];
            out[r][j] = s;
        }
}
#define HAS_AVX2_PATH 1
#else
static inline void block(const float* w, int K, const float** xr, const int R,
                         float out[RB][NB]) {
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NB; j++) {
            float s = 0.f;
            for (int k = 0; k < K; k++) s += w[(int64_t)j * K + k] * xr[r][k];
            out[r][j] = s;
        }
}
#define HAS_AVX2_PATH 0
#endif

/* Whether this build has the AVX2 FMA path (1) or plain loops only (0). */
int pc_f32_paths(void) { return HAS_AVX2_PATH; }

/* One block of NB outputs (the last may be narrower) for all M rows, RB rows a pass. */
static void outputs(const float* x, int64_t x_stride, int M, const float* w, const float* b,
                    int n0, int width, int K, float* y, int64_t y_stride) {
    float out[RB][NB];
    for (int r0 = 0; r0 < M; r0 += RB) {
        const int R = M - r0 < RB ? M - r0 : RB;
        const float* xr[RB];
        for (int r = 0; r < R; r++) xr[r] = x + (int64_t)(r0 + r) * x_stride;
        if (width == NB && R == 2) {
            block(w + (int64_t)n0 * K, K, xr, 2, out);
        } else if (width == NB) {
            block(w + (int64_t)n0 * K, K, xr, 1, out);
        } else { /* the last, narrower block */
            for (int r = 0; r < R; r++)
                for (int j = 0; j < width; j++) {
                    float s = 0.f;
                    for (int k = 0; k < K; k++) s += w[(int64_t)(n0 + j) * K + k] * xr[r][k];
                    out[r][j] = s;
                }
        }
        for (int r = 0; r < R; r++)
            for (int j = 0; j < width; j++)
                y[(int64_t)(r0 + r) * y_stride + n0 + j] = out[r][j] + (b ? b[n0 + j] : 0.f);
    }
}

/* y (M, N) = x (M, K) W^T + b. Returns 0, or 1 for bad arguments. */
int pc_f32_matmul(const float* x, int64_t x_stride, int M, const float* w, const float* b,
                  int N, int K, float* y, int64_t y_stride, int threads) {
    if (M < 1 || N < 1 || K < 1 || threads < 1 || threads > 4096) return 1;
    const int blocks = (N + NB - 1) / NB;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int i = 0; i < blocks; i++) {
        const int n0 = i * NB, width = N - n0 < NB ? N - n0 : NB;
        outputs(x, x_stride, M, w, b, n0, width, K, y, y_stride);
    }
    return 0;
}
