/* Rows of x as 16-bit integers per block of 32, for our kernels' integer dot products
 * (vpdpwssd): x = sx * xi with sx = the block's max |x| / 32767, below bfloat16's own
 * rounding for every element within 2^7 of its block's largest. With split 2 each row of
 * integers is followed by one for what it left out (x - sx * xi, at scale sx / 32767), so
 * that the two together round x to ~2^-30 of its block's largest: float32's precision. */
#ifndef PROMPTCACHE_INT16_ROWS_H
#define PROMPTCACHE_INT16_ROWS_H
#include <math.h>
#include <stdint.h>

#include "bf16.h"

/* x (M, K) float32 (dtype 0) or bfloat16 (dtype 1), rows x_stride apart -> xi (M * split,
 * K) and sx (M * split, K / 32); a block of zeros gets scale 0. */
static void int16_rows(const void* x, int dtype, int64_t x_stride, int M, int K, int split,
                       int16_t* xi, float* sx) {
    const int kb = K / 32;
    for (int r = 0; r < M; r++) {
        for (int b = 0; b < kb; b++) {
            float v[32], top = 0.f;
            for (int i = 0; i < 32; i++) {
                const int64_t at = r * x_stride + b * 32 + i;
                v[i] = dtype == 1 ? bf2f(((const uint16_t*)x)[at]) : ((const float*)x)[at];
                top = fmaxf(top, fabsf(v[i]));
            }
            const int64_t row = (int64_t)r * split;
            sx[row * kb + b] = top / 32767.f;
            const float inv = top > 0.f ? 32767.f / top : 0.f;
            int16_t* q = xi + row * K + b * 32;
            for (int i = 0; i < 32; i++) q[i] = (int16_t)lrintf(v[i] * inv);
            if (split == 1) continue;
            sx[(row + 1) * kb + b] = top / (32767.f * 32767.f);
            for (int i = 0; i < 32; i++) /* |v * inv - q| <= 1/2: within +-16384 */
                q[K + i] = (int16_t)lrintf((v[i] * inv - (float)q[i]) * 32767.f);
        }
    }
}
#endif
