/* Calls FN(w, t, r0, R, y) with R a constant 1..8, so that an always-inline tile function
 * is compiled once per row count (its loops over rows unrolled, accumulators in
 * registers). Shared by our matmul kernels, whose tiles take up to 8 rows. */
#ifndef PROMPTCACHE_DISPATCH_H
#define PROMPTCACHE_DISPATCH_H
#define DISPATCH(FN, w, t, r0, R, y)      \
    switch (R) {                          \
        case 1: FN(w, t, r0, 1, y); break; \
        case 2: FN(w, t, r0, 2, y); break; \
        case 3: FN(w, t, r0, 3, y); break; \
        case 4: FN(w, t, r0, 4, y); break; \
        case 5: FN(w, t, r0, 5, y); break; \
        case 6: FN(w, t, r0, 6, y); break; \
        case 7: FN(w, t, r0, 7, y); break; \
        default: FN(w, t, r0, 8, y); break; \
    }
#endif
