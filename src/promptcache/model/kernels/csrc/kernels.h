/* Every function our C kernels export, and the structs the one-call decode step reads:
 * declared once here. Each source includes this header, so the compiler checks its
 * definitions against these declarations; the decode step calls the other kernels through
 * the pointer types below, made from the same argument lists; and a test preprocesses this
 * file and checks every ctypes binding (`model/kernels/*.py`: SIGNATURES and the decode
 * step's Structures) against it, argument by argument and field by field.
 *
 * An argument list is a macro of the element type T, so the bfloat16 (uint16_t) and float32
 * kernels of one job share it, and the decode step's pointer types take it with T = void.
 * Every kernel returns 0, or a code saying which check failed.
 */
#ifndef PROMPTCACHE_KERNELS_H
#define PROMPTCACHE_KERNELS_H
#include <stdint.h>

/* The codes of x's dtype for the kernels that take it as an argument. */
#define PC_F32 0
#define PC_BF16 1

/* decode_attention.c: decode rows' attention over their blocks in place. */
#define PC_DECODE_ARGS(T)                                                                    \
    const T *q, int64_t q_sb, int64_t q_sh, const T *k, const T *v, const int64_t *tables,   \
        int64_t t_sb, const int64_t *ctx, int B, int H, int KV, int D, int BS, int64_t s_head, \
        int64_t s_block, float scale, T *out, int64_t o_sb, int64_t o_sh, int threads
int pc_decode_bf16(PC_DECODE_ARGS(uint16_t));
int pc_decode_f32(PC_DECODE_ARGS(float));

/* layer_ops.c: a layer's small steps. */
#define PC_ADD_NORM_ARGS(T)                                                                 \
    T *x, int64_t sx, const T *h, int64_t sh, const T *w, T *y, int64_t sy, int64_t rows,   \
        int64_t d, float eps, int threads
#define PC_SILU_MUL_ARGS(T) \
    const T *gu, int64_t sgu, T *out, int64_t so, int64_t rows, int64_t i, int threads
#define PC_ROPE_KV_ARGS(T)                                                                  \
    T *qkv, int64_t s_row, int64_t rows, int h, int kv, int d, const T *cos, const T *sin,  \
        int64_t s_cs, T *k_pool, T *v_pool, int64_t s_head, const int64_t *slots,            \
        int64_t n_slots, int threads
int pc_add_rms_norm_bf16(PC_ADD_NORM_ARGS(uint16_t));
int pc_add_rms_norm_f32(PC_ADD_NORM_ARGS(float));
int pc_silu_mul_bf16(PC_SILU_MUL_ARGS(uint16_t));
int pc_silu_mul_f32(PC_SILU_MUL_ARGS(float));
int pc_rope_kv_bf16(PC_ROPE_KV_ARGS(uint16_t));
int pc_rope_kv_f32(PC_ROPE_KV_ARGS(float));

/* q4_matmul.c: x (M, K) by a 4-bit weight (N, K); x's dtype by code (PC_F32, PC_BF16). */
#define PC_Q4_MATMUL_ARGS(T)                                                                \
    const T *x, int dtype, int64_t x_stride, int M, const uint8_t *codes, const float *scale, \
        const float *low, int N, int K, T *y, int64_t y_stride, int threads
int pc_q4_matmul(PC_Q4_MATMUL_ARGS(void));
int pc_q4_paths(void);
int pc_q4_layout(void);

/* q8_matmul.c: x (M, K) by an 8-bit weight (N, K) into float32 y. */
int pc_q8_matmul(const void *x, int dtype, int64_t x_stride, int M, const int8_t *codes,
                 const float *scale, int N, int K, float *y, int64_t y_stride, int threads);
int pc_q8_paths(void);

/* decode_step.c: a 4-bit model's decode layers in one call, through these pointers. */
typedef int (*pc_q4_fn)(PC_Q4_MATMUL_ARGS(void));
typedef int (*pc_norm_fn)(PC_ADD_NORM_ARGS(void));
typedef int (*pc_silu_fn)(PC_SILU_MUL_ARGS(void));
typedef int (*pc_rope_fn)(PC_ROPE_KV_ARGS(void));
typedef int (*pc_attn_fn)(PC_DECODE_ARGS(void));

typedef struct {
    pc_q4_fn q4;
    pc_norm_fn norm;
    pc_silu_fn silu;
    pc_rope_fn rope;
    pc_attn_fn attn;
} Kernels;

typedef struct { /* a 4-bit weight as q4_matmul.PackedQ4 holds it */
    const void *codes;
    const void *scale;
    const void *low;
    int32_t n;
    int32_t k;
} Q4Weight;

typedef struct {
    const void *in_norm; /* (hidden,) in the rows' dtype */
    const void *post_norm;
    Q4Weight qkv;
    Q4Weight o;
    Q4Weight gate_up;
    Q4Weight down;
    void *k_pool; /* (KV, blocks, BS, D), each head's slots contiguous */
    void *v_pool;
} Layer;

typedef struct {
    int32_t hidden;
    int32_t heads;
    int32_t kv_heads;
    int32_t head_dim;
    int32_t inter;
    int32_t block_size;
    int32_t dtype; /* PC_F32 or PC_BF16 */
    int64_t pool_head_stride;
    int64_t pool_block_stride;
    int64_t pool_slots;
    float eps;
    float scale;
} Dims;

typedef struct { /* the step's rows and scratch, all (B, width) contiguous */
    void *x;
    void *h;
    void *normed;
    void *qkv;
    void *att;
    void *gate_up;
    void *act;
    void *out;
} Buffers;

int pc_decode_layers(const Kernels *f, const Layer *layers, int n_layers, const Dims *d,
                     const Buffers *m, int B, const void *final_norm, const void *cos,
                     const void *sin, const int64_t *slots, const int64_t *tables,
                     int64_t tables_stride, const int64_t *ctx, int threads);
#endif
