/* Decode attention for the embedded engine: one new query token per row against that row's cached keys
 * and values, the query heads of each KV head together (grouped-query attention), float32.
 *
 * Why a kernel of our own: at 16 rows a decode step runs 48 tiny attention problems per layer (3 query
 * heads x ~150 columns x 64 dims each), and torch's CPU SDPA spends ~0.5 ms a layer on them — half the
 * step at 150 columns. This loop does the same arithmetic (float32 accumulation, softmax with the row's
 * maximum subtracted) in about half that. Compiled on the machine it runs on (kernels.py).
 *
 * query    [rows, kv_heads, group, dim], contiguous
 * keys     element (row r, head h, column c, dim x) at r*s_slot + h*s_head + c*s_col + x
 * values   same layout as keys
 * lengths  [rows]: row r attends columns 0..lengths[r]
 * out      [rows, kv_heads, group, dim]
 * scores   scratch of group * (max(lengths) + 1) floats
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

/* The lane sums of a[0..7] as one vector: 8 dot products finished with 7 shuffles instead of 8 reductions. */
static inline __m256 sum8(const __m256 *a) {
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* s[j] = scale * q . k_j for as many whole blocks of 8 columns as fit; returns the first column left. */
static int scores8(const float *q, const float *kb, long s_col, int n, int dim, float scale, float *s) {
    int j = 0;
    if (dim % 8) return 0;
    for (; j + 8 <= n; j += 8) {
        __m256 acc[8];
        for (int jj = 0; jj < 8; jj++) {
            const float *kj = kb + (long)(j + jj) * s_col;
            __m256 a = _mm256_setzero_ps();
            for (int x = 0; x < dim; x += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + x), _mm256_loadu_ps(kj + x), a);
            acc[jj] = a;
        }
        _mm256_storeu_ps(s + j, _mm256_mul_ps(sum8(acc), _mm256_set1_ps(scale)));
    }
    return j;
}

/* o = sum_c p[c] v_c, 32 dims at a time held in registers; returns 0 when dim does not split so. */
static int weighted32(const float *p, const float *vb, long s_col, int n, int dim, float *o) {
    if (dim % 32) return 0;
    for (int x = 0; x < dim; x += 32) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < n; c++) {
            const float *vc = vb + (long)c * s_col + x;
            __m256 w = _mm256_set1_ps(p[c]);
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vc), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vc + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vc + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vc + 24), a3);
        }
        _mm256_storeu_ps(o + x, a0);
        _mm256_storeu_ps(o + x + 8, a1);
        _mm256_storeu_ps(o + x + 16, a2);
        _mm256_storeu_ps(o + x + 24, a3);
    }
    return 1;
}
#else
/* Without AVX2/FMA the plain loops below serve every shape (the compiler vectorizes what it can). */
static int scores8(const float *q, const float *kb, long s_col, int n, int dim, float scale, float *s) { return 0; }
static int weighted32(const float *p, const float *vb, long s_col, int n, int dim, float *o) { return 0; }
#endif

void decode_attention_float32(const float *query, const float *keys, const float *values, long s_slot, long s_head,
                              long s_col, const int64_t *lengths, int rows, int kv_heads, int group, int dim,
                              float scale, float *out, float *scores) {
    for (int r = 0; r < rows; r++) {
        int n = (int)lengths[r] + 1;
        for (int h = 0; h < kv_heads; h++) {
            const float *kb = keys + r * s_slot + h * s_head;
            const float *vb = values + r * s_slot + h * s_head;
            for (int i = 0; i < group; i++) {
                const float *q = query + ((long)(r * kv_heads + h) * group + i) * dim;
                float *o = out + ((long)(r * kv_heads + h) * group + i) * dim;
                float *s = scores + i * n;
                for (int j = scores8(q, kb, s_col, n, dim, scale, s); j < n; j++) {
                    const float *kj = kb + (long)j * s_col;
                    float dot = 0.f;
                    for (int x = 0; x < dim; x++) dot += q[x] * kj[x];
                    s[j] = dot * scale;
                }
                float top = s[0], total = 0.f;
                for (int c = 1; c < n; c++) top = s[c] > top ? s[c] : top;
                for (int c = 0; c < n; c++) {
                    s[c] = expf(s[c] - top);
                    total += s[c];
                }
                for (int c = 0; c < n; c++) s[c] /= total;
                if (!weighted32(s, vb, s_col, n, dim, o)) {
                    memset(o, 0, sizeof(float) * dim);
                    for (int c = 0; c < n; c++) {
                        const float *vc = vb + (long)c * s_col;
                        for (int x = 0; x < dim; x++) o[x] += s[c] * vc[x];
                    }
                }
            }
        }
    }
}
