/* Decode attention for the embedded engine: one new query token per row against that row's cached keys
 * and values, the query heads of each KV head together (grouped-query attention), float32 arithmetic over
 * a float32 or a bfloat16 cache.
 *
 * Why a kernel of our own: at 16 rows a decode step runs 48 tiny attention problems per layer (3 query
 * heads x ~150 columns x 64 dims each), and torch's CPU SDPA spends ~0.5 ms a layer on them — half the
 * step at 150 columns. This loop does the same arithmetic (float32 accumulation, softmax with the row's
 * maximum subtracted) in about half that. Past that it is bound by reading the cache (each row reads its
 * own columns: at 16 rows x 150 columns as many bytes a step as the int8 weights), so the int8 engine
 * keeps a bfloat16 cache — half the bytes, widened to float32 in registers (exact: a bfloat16 is the
 * high half of a float32). Compiled on the machine it runs on (kernels.py).
 *
 * query    [rows, kv_heads, group, dim] float32, contiguous
 * keys     element (row r, head h, column c, dim x) at r*s_slot + h*s_head + c*s_col + x, in elements
 * values   same layout as keys
 * lengths  [rows]: row r attends columns 0..lengths[r]
 * out      [rows, kv_heads, group, dim] float32
 * scores   scratch of group * (max(lengths) + 1) floats
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

/* Every helper takes `bf16` (the cache's element type) and is inlined into the two entry points with it
 * constant: each entry point is compiled for its own element type, with no branch left per element. */
#define INLINE static inline __attribute__((always_inline))

INLINE float load1(const void *base, long index, int bf16) {
    if (!bf16) return ((const float *)base)[index];
    uint32_t bits = (uint32_t)((const uint16_t *)base)[index] << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

INLINE const void *at(const void *base, long index, int bf16) {
    return bf16 ? (const void *)((const uint16_t *)base + index) : (const void *)((const float *)base + index);
}

/* Ask for columns first..first+count of a segment ahead of use. Each (row, head) reads its own short run of
 * the cache, and the hardware prefetchers stop at every 4 KB page: without this the kernel waited on
 * memory at a fifth of the bandwidth a plain sum over a large tensor gets. */
INLINE void prefetch_columns(const void *base, long first, int count, long s_col, int dim, int bf16) {
    int size = bf16 ? 2 : 4;
    for (int c = 0; c < count; c++) {
        const char *column = (const char *)base + (first + c) * s_col * size;
        for (int offset = 0; offset < dim * size; offset += 64) __builtin_prefetch(column + offset);
    }
}

#if defined(__AVX2__) && defined(__FMA__)
INLINE __m256 load8(const void *base, long index, int bf16) {
    if (!bf16) return _mm256_loadu_ps((const float *)base + index);
    __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + index)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

/* The lane sums of a[0..7] as one vector: 8 dot products finished with 7 shuffles instead of 8 reductions. */
INLINE __m256 sum8(const __m256 *a) {
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* s[j] = scale * q . k_j for as many whole blocks of 8 columns as fit; returns the first column left.
 * The 8 columns' dot products run interleaved (8 independent FMA chains, one load of q per step): one
 * chain at a time waits on each FMA's latency, and so issues the cache's loads slower than memory could
 * serve them. */
INLINE int scores8(const float *q, const void *kb, long s_col, int n, int dim, float scale, float *s, int bf16) {
    int j = 0;
    if (dim % 8) return 0;
    for (; j + 8 <= n; j += 8) {
        __m256 acc[8];
        for (int jj = 0; jj < 8; jj++) acc[jj] = _mm256_setzero_ps();
        prefetch_columns(kb, j + 32, 8, s_col, dim, bf16);
        for (int x = 0; x < dim; x += 8) {
            __m256 qx = _mm256_loadu_ps(q + x);
            for (int jj = 0; jj < 8; jj++) acc[jj] = _mm256_fmadd_ps(qx, load8(kb, (long)(j + jj) * s_col + x, bf16), acc[jj]);
        }
        _mm256_storeu_ps(s + j, _mm256_mul_ps(sum8(acc), _mm256_set1_ps(scale)));
    }
    return j;
}

/* o[x..x+8*width) = sum_c p[c] v_c over `width` vectors held in registers. */
INLINE void weighted_block(const float *p, const void *vb, long s_col, int n, int x, float *o, int bf16, int width) {
    __m256 acc[8];
    for (int u = 0; u < width; u++) acc[u] = _mm256_setzero_ps();
    for (int c = 0; c < n; c++) {
        long vc = (long)c * s_col + x;
        __m256 w = _mm256_set1_ps(p[c]);
        prefetch_columns(at(vb, x, bf16), c + 32, 1, s_col, 8 * width, bf16);
        for (int u = 0; u < width; u++) acc[u] = _mm256_fmadd_ps(w, load8(vb, vc + 8 * u, bf16), acc[u]);
    }
    for (int u = 0; u < width; u++) _mm256_storeu_ps(o + x + 8 * u, acc[u]);
}

/* o = sum_c p[c] v_c, 64 (else 32) dims at a time in registers; returns 0 when dim does not split so. */
INLINE int weighted(const float *p, const void *vb, long s_col, int n, int dim, float *o, int bf16) {
    if (dim % 64 == 0) {
        for (int x = 0; x < dim; x += 64) weighted_block(p, vb, s_col, n, x, o, bf16, 8);
        return 1;
    }
    if (dim % 32 == 0) {
        for (int x = 0; x < dim; x += 32) weighted_block(p, vb, s_col, n, x, o, bf16, 4);
        return 1;
    }
    return 0;
}
#else
/* Without AVX2/FMA the plain loops below serve every shape (the compiler vectorizes what it can). */
INLINE int scores8(const float *q, const void *kb, long s_col, int n, int dim, float scale, float *s, int bf16) { return 0; }
INLINE int weighted(const float *p, const void *vb, long s_col, int n, int dim, float *o, int bf16) { return 0; }
#endif

INLINE void attend(const float *query, const void *keys, const void *values, long s_slot, long s_head, long s_col,
                   const int64_t *lengths, int rows, int kv_heads, int group, int dim, float scale, float *out,
                   float *scores, int bf16) {
    for (int r = 0; r < rows; r++) {
        int n = (int)lengths[r] + 1;
        for (int h = 0; h < kv_heads; h++) {
            long base = r * s_slot + h * s_head;
            const void *kb = at(keys, base, bf16), *vb = at(values, base, bf16);
            /* The values' first columns, and the next head's keys, on their way while these keys are read. */
            prefetch_columns(vb, 0, 16, s_col, dim, bf16);
            if (h + 1 < kv_heads || r + 1 < rows) {
                long next = h + 1 < kv_heads ? base + s_head : (r + 1) * s_slot;
                prefetch_columns(at(keys, next, bf16), 0, 16, s_col, dim, bf16);
            }
            for (int i = 0; i < group; i++) {
                const float *q = query + ((long)(r * kv_heads + h) * group + i) * dim;
                float *o = out + ((long)(r * kv_heads + h) * group + i) * dim;
                float *s = scores + i * n;
                for (int j = scores8(q, kb, s_col, n, dim, scale, s, bf16); j < n; j++) {
                    float dot = 0.f;
                    for (int x = 0; x < dim; x++) dot += q[x] * load1(kb, (long)j * s_col + x, bf16);
                    s[j] = dot * scale;
                }
                float top = s[0], total = 0.f;
                for (int c = 1; c < n; c++) top = s[c] > top ? s[c] : top;
                for (int c = 0; c < n; c++) {
                    s[c] = expf(s[c] - top);
                    total += s[c];
                }
                for (int c = 0; c < n; c++) s[c] /= total;
                if (!weighted(s, vb, s_col, n, dim, o, bf16)) {
                    memset(o, 0, sizeof(float) * dim);
                    for (int c = 0; c < n; c++)
                        for (int x = 0; x < dim; x++) o[x] += s[c] * load1(vb, (long)c * s_col + x, bf16);
                }
            }
        }
    }
}

void decode_attention_float32(const float *query, const float *keys, const float *values, long s_slot, long s_head,
                              long s_col, const int64_t *lengths, int rows, int kv_heads, int group, int dim,
                              float scale, float *out, float *scores) {
    attend(query, keys, values, s_slot, s_head, s_col, lengths, rows, kv_heads, group, dim, scale, out, scores, 0);
}

void decode_attention_bfloat16(const float *query, const uint16_t *keys, const uint16_t *values, long s_slot,
                               long s_head, long s_col, const int64_t *lengths, int rows, int kv_heads, int group,
                               int dim, float scale, float *out, float *scores) {
    attend(query, keys, values, s_slot, s_head, s_col, lengths, rows, kv_heads, group, dim, scale, out, scores, 1);
}
