/* Decode attention for the embedded engine: one new query token per row against that row's cached keys
 * and values, the query heads of each KV head together (grouped-query attention).
 *
 * Why a kernel of our own: at 16 rows a decode step runs 48 tiny attention problems per layer (3 query
 * heads x ~150 columns x 64 dims each), and torch's CPU SDPA spends ~0.5 ms a layer on them — half the
 * step at 150 columns. This loop does the same arithmetic (float32 accumulation, softmax with the
 * running maximum subtracted) in a fraction of that. Compiled on the machine it runs on (kernels.py).
 *
 * query    [rows, kv_heads, group, dim] float32, contiguous
 * keys     element (row r, head h, column c, dim x) at r*s_slot + h*s_head + c*s_col + x (float32 or bf16)
 * values   same layout as keys
 * lengths  [rows] int64: row r attends columns 0..lengths[r]
 * out      [rows, kv_heads, group, dim] float32
 * scores   scratch of group * (max(lengths) + 1) floats
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

static inline float bf16_to_float(uint16_t v) {
    union { uint32_t u; float f; } x;
    x.u = ((uint32_t)v) << 16;
    return x.f;
}
#define AS_FLOAT(x) ((float)(x))

#if defined(__AVX2__) && defined(__FMA__)
#define VECTORIZED 1
static inline __m256 load8_float(const float *p) { return _mm256_loadu_ps(p); }
static inline __m256 load8_bf16(const uint16_t *p) {
    __m128i raw = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}
/* The lane sums of a[0..7] as one vector: 8 dot products finished with 7 shuffles instead of 8 reductions. */
static inline __m256 sum8(const __m256 *a) {
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
#else
#define VECTORIZED 0
#endif

/* One function per cache element type T; LOAD reads one element as float, LOAD8 eight as a vector. */
#define DECODE_ATTENTION(NAME, T, LOAD, LOAD8)                                                              \
    void NAME(const float *query, const T *keys, const T *values, long s_slot, long s_head, long s_col,      \
              const int64_t *lengths, int rows, int kv_heads, int group, int dim, float scale, float *out,   \
              float *scores) {                                                                               \
        for (int r = 0; r < rows; r++) {                                                                     \
            int n = (int)lengths[r] + 1;                                                                     \
            for (int h = 0; h < kv_heads; h++) {                                                             \
                const T *kb = keys + r * s_slot + h * s_head;                                                \
                const T *vb = values + r * s_slot + h * s_head;                                              \
                const float *qb = query + (long)(r * kv_heads + h) * group * dim;                            \
                float *ob = out + (long)(r * kv_heads + h) * group * dim;                                    \
                for (int i = 0; i < group; i++) {                                                            \
                    const float *q = qb + i * dim;                                                           \
                    float *s = scores + i * n;                                                               \
                    int j = 0;                                                                               \
                    if (VECTORIZED && dim % 8 == 0) {                                                        \
                        QK8(T, LOAD8)                                                                        \
                    }                                                                                        \
                    for (; j < n; j++) {                                                                     \
                        const T *kj = kb + (long)j * s_col;                                                  \
                        float dot = 0.f;                                                                     \
                        for (int x = 0; x < dim; x++) dot += q[x] * LOAD(kj[x]);                             \
                        s[j] = dot * scale;                                                                  \
                    }                                                                                        \
                    float top = s[0], total = 0.f;                                                           \
                    for (int c = 1; c < n; c++) top = s[c] > top ? s[c] : top;                               \
                    for (int c = 0; c < n; c++) {                                                            \
                        s[c] = expf(s[c] - top);                                                             \
                        total += s[c];                                                                       \
                    }                                                                                        \
                    for (int c = 0; c < n; c++) s[c] /= total;                                               \
                }                                                                                            \
                if (VECTORIZED && dim % 32 == 0) {                                                           \
                    PV32(T, LOAD8)                                                                           \
                } else {                                                                                     \
                    for (int i = 0; i < group; i++) {                                                        \
                        const float *p = scores + i * n;                                                     \
                        float *o = ob + i * dim;                                                             \
                        memset(o, 0, sizeof(float) * dim);                                                   \
                        for (int c = 0; c < n; c++) {                                                        \
                            const T *vc = vb + (long)c * s_col;                                              \
                            for (int x = 0; x < dim; x++) o[x] += p[c] * LOAD(vc[x]);                        \
                        }                                                                                    \
                    }                                                                                        \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
    }

#if VECTORIZED
/* Scores of 8 columns at a time: 8 dot products, then one sum8. */
#define QK8(T, LOAD8)                                                                                        \
    for (; j + 8 <= n; j += 8) {                                                                             \
        __m256 acc[8];                                                                                       \
        for (int jj = 0; jj < 8; jj++) {                                                                     \
            const T *kj = kb + (long)(j + jj) * s_col;                                                       \
            __m256 a = _mm256_setzero_ps();                                                                  \
            for (int x = 0; x < dim; x += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + x), LOAD8(kj + x), a);  \
            acc[jj] = a;                                                                                     \
        }                                                                                                    \
        _mm256_storeu_ps(s + j, _mm256_mul_ps(sum8(acc), _mm256_set1_ps(scale)));                            \
    }
/* out_i = sum_c p_ic v_c, 32 dims at a time held in registers. */
#define PV32(T, LOAD8)                                                                                       \
    for (int i = 0; i < group; i++) {                                                                        \
        const float *p = scores + i * n;                                                                     \
        for (int x = 0; x < dim; x += 32) {                                                                  \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                      \
            for (int c = 0; c < n; c++) {                                                                    \
                const T *vc = vb + (long)c * s_col + x;                                                      \
                __m256 w = _mm256_set1_ps(p[c]);                                                             \
                a0 = _mm256_fmadd_ps(w, LOAD8(vc), a0);                                                      \
                a1 = _mm256_fmadd_ps(w, LOAD8(vc + 8), a1);                                                  \
                a2 = _mm256_fmadd_ps(w, LOAD8(vc + 16), a2);                                                 \
                a3 = _mm256_fmadd_ps(w, LOAD8(vc + 24), a3);                                                 \
            }                                                                                                \
            float *o = ob + i * dim + x;                                                                     \
            _mm256_storeu_ps(o, a0);                                                                         \
            _mm256_storeu_ps(o + 8, a1);                                                                     \
            _mm256_storeu_ps(o + 16, a2);                                                                    \
            _mm256_storeu_ps(o + 24, a3);                                                                    \
        }                                                                                                    \
    }
#else
/* Without AVX2/FMA the plain loops serve every shape (the compiler vectorizes what it can). */
#define QK8(T, LOAD8)
#define PV32(T, LOAD8)
#endif

DECODE_ATTENTION(decode_attention_float32, float, AS_FLOAT, load8_float)
DECODE_ATTENTION(decode_attention_bfloat16, uint16_t, bf16_to_float, load8_bf16)
