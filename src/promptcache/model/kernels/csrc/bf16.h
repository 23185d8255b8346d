/* bfloat16 <-> float32 for our C kernels: widening is exact; narrowing rounds to nearest
 * even, as PyTorch does. */
#ifndef PROMPTCACHE_BF16_H
#define PROMPTCACHE_BF16_H
#include <stdint.h>
#include <string.h>

static inline float bf2f(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f2bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
#endif
