// Exact softmax attention with 2-D relative logits on the CPU, fused in tiles.
//
// Bello et al., "Attention Augmented Convolutional Networks" (ICCV 2019), Sec. 3.1-3.2: the logit of
// query i and key j = (y, x) is  scale q_i.k_j + lh[i, y] + lw[i, x]  (lh, lw: the per-query relative
// logits, already scaled). FlashAttention's recipe (Dao et al. 2022; the backward pass of
// FlashAttention-2, Dao 2023): a tile of kRows queries meets the keys in chunks of whole key rows,
// so a chunk of logits lives in the core's first-level cache and every key and value loaded serves
// kRows queries; the forward pass keeps a running maximum and sum per query (online softmax) and
// one log-sum-exp, from which the backward pass recomputes each chunk. Memory: O(kRows * chunk)
// per thread beyond the inputs and outputs; never an N x N tensor.
//
// Layout (float32, contiguous): per head g of G, the transposed projections qt, kt (d, N),
// vt (dv, N) and the output ot (dv, N); lh (N, H), lw (N, W), or null pointers for no positions;
// lse (N). Heads are split across `threads` threads, so every output has one writer.
// Vectors: the GCC/Clang vector extension (8 floats), so the source builds on any target; built by
// aalib/native.py with -O3 -march=native -fopenmp-simd (the `omp simd` loops vectorise, no OpenMP
// runtime).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

typedef float vec8 __attribute__((vector_size(32)));
typedef float vec8u __attribute__((vector_size(32), aligned(4)));  // unaligned loads and stores

inline vec8 load(const float* x) { return *reinterpret_cast<const vec8u*>(x); }
inline void store(float* x, vec8 v) { *reinterpret_cast<vec8u*>(x) = v; }

inline float lanes_sum(vec8 v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

constexpr int kRows = 8;           // queries per tile
constexpr int64_t kChunk = 256;    // keys per chunk (rounded to whole key rows with positions)

// exp(x) (Cephes expf: range reduction to [-ln2/2, ln2/2], degree-6 polynomial; relative error
// below 2e-7), exactly 0 below -87 (where exp underflows float32's normal range).
#pragma omp declare simd
inline float fast_exp(float x) {
    const float clamped = std::max(x, -87.0f);
    // rounded to nearest by adding and subtracting 1.5 * 2^23 (vectorises; |x log2(e)| < 2^22 here)
    const float n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float two_n;
    std::memcpy(&two_n, &bits, sizeof two_n);
    return x < -87.0f ? 0.0f : y * two_n;
}

float maximum(const float* __restrict a, int64_t n) {
    float m = -INFINITY;
    int64_t j = 0;
    if (n >= 16) {
        vec8 m0 = load(a), m1 = load(a + 8);
        for (j = 16; j + 16 <= n; j += 16) {
            const vec8 x0 = load(a + j), x1 = load(a + j + 8);
            m0 = m0 > x0 ? m0 : x0;
            m1 = m1 > x1 ? m1 : x1;
        }
        m0 = m0 > m1 ? m0 : m1;
        for (int l = 0; l < 8; ++l) m = std::max(m, m0[l]);
    }
    for (; j < n; ++j) m = std::max(m, a[j]);
    return m;
}

float sum(const float* __restrict a, int64_t n) {
    vec8 s0 = {}, s1 = {};
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        s0 += load(a + j);
        s1 += load(a + j + 8);
    }
    float total = lanes_sum(s0 + s1);
    for (; j < n; ++j) total += a[j];
    return total;
}

// out[r][j] (+)= sum_e coef[e][r] cols[e][j] for r < kRows, j < len: coef (count, kRows),
// cols rows `stride` apart, out rows `ld` apart. With `accumulate` false, out starts at 0.
void rows_from_cols(const float* coef, const float* cols, int64_t stride, int64_t count, int64_t len, float* out,
                    int64_t ld, bool accumulate) {
    int64_t j = 0;
    for (; j + 8 <= len; j += 8) {
        vec8 a[kRows];
        for (int r = 0; r < kRows; ++r) a[r] = accumulate ? load(out + r * ld + j) : vec8{};
        for (int64_t e = 0; e < count; ++e) {
            const vec8 c = load(cols + e * stride + j);
            const float* k = coef + e * kRows;
            for (int r = 0; r < kRows; ++r) a[r] += k[r] * c;
        }
        for (int r = 0; r < kRows; ++r) store(out + r * ld + j, a[r]);
    }
    for (; j < len; ++j) {
        for (int r = 0; r < kRows; ++r) {
            float a = accumulate ? out[r * ld + j] : 0.0f;
            for (int64_t e = 0; e < count; ++e) a += coef[e * kRows + r] * cols[e * stride + j];
            out[r * ld + j] = a;
        }
    }
}

// acc[r][e] += sum_j rows[r][j] cols[e][j] (lane-wise partial sums): rows `ld` apart, cols rows
// `stride` apart, acc (kRows, count) vectors.
void dots_into(const float* rows, int64_t ld, const float* cols, int64_t stride, int64_t count, int64_t len,
               vec8* acc) {
    for (int64_t e = 0; e < count; ++e) {
        vec8 a[kRows];
        for (int r = 0; r < kRows; ++r) a[r] = acc[r * count + e];
        const float* c = cols + e * stride;
        int64_t j = 0;
        for (; j + 8 <= len; j += 8) {
            const vec8 ce = load(c + j);
            for (int r = 0; r < kRows; ++r) a[r] += load(rows + r * ld + j) * ce;
        }
        for (; j < len; ++j)
            for (int r = 0; r < kRows; ++r) a[r][0] += rows[r * ld + j] * c[j];
        for (int r = 0; r < kRows; ++r) acc[r * count + e] = a[r];
    }
}

// cols[e][j] += sum_r coef[e][r] rows[r][j]: coef (count, kRows), rows `ld` apart, cols rows `stride` apart.
void cols_from_rows(const float* coef, const float* rows, int64_t ld, int64_t count, int64_t len, float* cols,
                    int64_t stride) {
    for (int64_t e = 0; e < count; ++e) {
        const float* k = coef + e * kRows;
        float* c = cols + e * stride;
        int64_t j = 0;
        for (; j + 16 <= len; j += 16) {
            vec8 x0 = load(c + j), x1 = load(c + j + 8), y0 = {}, y1 = {};
            for (int r = 0; r < kRows; r += 2) {
                x0 += k[r] * load(rows + r * ld + j);
                x1 += k[r] * load(rows + r * ld + j + 8);
                y0 += k[r + 1] * load(rows + (r + 1) * ld + j);
                y1 += k[r + 1] * load(rows + (r + 1) * ld + j + 8);
            }
            store(c + j, x0 + y0);
            store(c + j + 8, x1 + y1);
        }
        for (; j < len; ++j) {
            float x = c[j];
            for (int r = 0; r < kRows; ++r) x += k[r] * rows[r * ld + j];
            c[j] = x;
        }
    }
}

struct Problem {
    int64_t heads, n, d, dv, h, w;
    float scale;
    const float *qt, *kt, *vt, *lh, *lw;

    bool positions() const { return lh != nullptr; }
    // keys per chunk: whole key rows with positions (so a chunk's relative logits are rows of lh)
    int64_t chunk() const { return positions() ? std::max<int64_t>(1, kChunk / w) * w : kChunk; }
};

// The tile's queries i0 .. i0 + kRows - 1 (rows past N are zero): qs[e][r] = scale q, and, with
// positions, their relative logits lh (kRows, H) and lw (kRows, W).
int load_tile(const Problem& p, int64_t g, int64_t i0, float* qs, float* th, float* tw) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, p.n - i0));
    const float* qt = p.qt + g * p.d * p.n;
    for (int64_t e = 0; e < p.d; ++e)
        for (int r = 0; r < kRows; ++r) qs[e * kRows + r] = r < rows ? p.scale * qt[e * p.n + i0 + r] : 0.0f;
    if (p.positions()) {
        for (int r = 0; r < kRows; ++r) {
            for (int64_t y = 0; y < p.h; ++y) th[r * p.h + y] = r < rows ? p.lh[(g * p.n + i0 + r) * p.h + y] : 0.0f;
            for (int64_t x = 0; x < p.w; ++x) tw[r * p.w + x] = r < rows ? p.lw[(g * p.n + i0 + r) * p.w + x] : 0.0f;
        }
    }
    return rows;
}

// s[r][j - j0] = scale q_r.k_j + lh[r, y_j] + lw[r, x_j] for the keys j0 .. j0 + len - 1.
void chunk_logits(const Problem& p, int64_t g, const float* qs, const float* th, const float* tw, int64_t j0,
                  int64_t len, float* s, int64_t ld) {
    if (p.positions()) {
        const int64_t y0 = j0 / p.w;
        for (int r = 0; r < kRows; ++r)
            for (int64_t yy = 0; yy < len / p.w; ++yy) {
                const float bias = th[r * p.h + y0 + yy];
                float* row = s + r * ld + yy * p.w;
                const float* lw = tw + r * p.w;
#pragma omp simd
                for (int64_t x = 0; x < p.w; ++x) row[x] = bias + lw[x];
            }
    }
    rows_from_cols(qs, p.kt + g * p.d * p.n + j0, p.n, p.d, len, s, ld, p.positions());
}

void forward_heads(const Problem& p, float* ot, float* lse, int64_t first, int64_t step) {
    const int64_t n = p.n, ld = p.chunk();
    std::vector<float> qs(p.d * kRows), th(kRows * p.h), tw(kRows * p.w), s(kRows * ld);
    std::vector<vec8> acc(kRows * p.dv);
    for (int64_t g = first; g < p.heads; g += step) {
        const float* vt = p.vt + g * p.dv * n;
        for (int64_t i0 = 0; i0 < n; i0 += kRows) {
            const int rows = load_tile(p, g, i0, qs.data(), th.data(), tw.data());
            float m[kRows], l[kRows];
            std::fill(m, m + kRows, -INFINITY);
            std::fill(l, l + kRows, 0.0f);
            std::fill(acc.begin(), acc.end(), vec8{});
            for (int64_t j0 = 0; j0 < n; j0 += ld) {
                const int64_t len = std::min(ld, n - j0);
                chunk_logits(p, g, qs.data(), th.data(), tw.data(), j0, len, s.data(), ld);
                for (int r = 0; r < kRows; ++r) {  // online softmax: rescale what the earlier chunks summed
                    float* row = s.data() + r * ld;
                    const float top = std::max(m[r], maximum(row, len));
                    const float alpha = std::exp(m[r] - top);
                    m[r] = top;
#pragma omp simd
                    for (int64_t j = 0; j < len; ++j) row[j] = fast_exp(row[j] - top);
                    l[r] = l[r] * alpha + sum(row, len);
                    for (int64_t e = 0; e < p.dv; ++e) acc[r * p.dv + e] *= alpha;
                }
                dots_into(s.data(), ld, vt + j0, n, p.dv, len, acc.data());
            }
            for (int r = 0; r < rows; ++r) {
                for (int64_t e = 0; e < p.dv; ++e) ot[(g * p.dv + e) * n + i0 + r] = lanes_sum(acc[r * p.dv + e]) / l[r];
                lse[g * n + i0 + r] = m[r] + std::log(l[r]);
            }
        }
    }
}

void backward_heads(const Problem& p, const float* got, const float* ot, const float* lse, float* gqt, float* gkt,
                    float* gvt, float* glh, float* glw, int64_t first, int64_t step) {
    const int64_t n = p.n, ld = p.chunk();
    std::vector<float> qs(p.d * kRows), th(kRows * p.h), tw(kRows * p.w), gos(p.dv * kRows);
    std::vector<float> s(kRows * ld), ds(kRows * ld);
    std::vector<vec8> acc(kRows * p.d);
    for (int64_t g = first; g < p.heads; g += step) {
        const float* kt = p.kt + g * p.d * n;
        const float* vt = p.vt + g * p.dv * n;
        float* gk = gkt + g * p.d * n;
        float* gv = gvt + g * p.dv * n;
        std::fill(gk, gk + p.d * n, 0.0f);
        std::fill(gv, gv + p.dv * n, 0.0f);
        for (int64_t i0 = 0; i0 < n; i0 += kRows) {
            const int rows = load_tile(p, g, i0, qs.data(), th.data(), tw.data());
            float row_lse[kRows], delta[kRows];  // delta_i = sum_j P_ij dP_ij = dO_i . O_i
            for (int r = 0; r < kRows; ++r) {
                row_lse[r] = r < rows ? lse[g * n + i0 + r] : INFINITY;  // rows past N: P = 0
                delta[r] = 0.0f;
            }
            for (int64_t e = 0; e < p.dv; ++e)
                for (int r = 0; r < kRows; ++r) {
                    const int64_t at = (g * p.dv + e) * n + i0 + r;
                    gos[e * kRows + r] = r < rows ? got[at] : 0.0f;
                    if (r < rows) delta[r] += got[at] * ot[at];
                }
            std::fill(acc.begin(), acc.end(), vec8{});
            if (p.positions())
                for (int r = 0; r < rows; ++r) std::fill(glw + (g * n + i0 + r) * p.w, glw + (g * n + i0 + r + 1) * p.w, 0.0f);
            for (int64_t j0 = 0; j0 < n; j0 += ld) {
                const int64_t len = std::min(ld, n - j0);
                chunk_logits(p, g, qs.data(), th.data(), tw.data(), j0, len, s.data(), ld);
                rows_from_cols(gos.data(), vt + j0, n, p.dv, len, ds.data(), ld, false);  // dP = dO_i . v_j
                for (int r = 0; r < kRows; ++r) {
                    float* pr = s.data() + r * ld;
                    float* dr = ds.data() + r * ld;
                    const float top = row_lse[r], dl = delta[r];
#pragma omp simd
                    for (int64_t j = 0; j < len; ++j) {
                        pr[j] = fast_exp(pr[j] - top);  // P
                        dr[j] = pr[j] * (dr[j] - dl);   // dS = P (dP - delta)
                    }
                }
                if (p.positions()) {  // dLh_i[y] = sum_x dS_i(y, x); dLw_i[x] = sum_y dS_i(y, x)
                    const int64_t y0 = j0 / p.w;
                    for (int r = 0; r < rows; ++r) {
                        float* gh = glh + (g * n + i0 + r) * p.h;
                        float* __restrict gw = glw + (g * n + i0 + r) * p.w;
                        for (int64_t yy = 0; yy < len / p.w; ++yy) {
                            const float* __restrict row = ds.data() + r * ld + yy * p.w;
                            gh[y0 + yy] = sum(row, p.w);
#pragma omp simd
                            for (int64_t x = 0; x < p.w; ++x) gw[x] += row[x];
                        }
                    }
                }
                dots_into(ds.data(), ld, kt + j0, n, p.d, len, acc.data());         // dQ_i += dS_ij k_j
                cols_from_rows(qs.data(), ds.data(), ld, p.d, len, gk + j0, n);    // dK_j += scale dS_ij q_i
                cols_from_rows(gos.data(), s.data(), ld, p.dv, len, gv + j0, n);   // dV_j += P_ij dO_i
            }
            for (int r = 0; r < rows; ++r)
                for (int64_t e = 0; e < p.d; ++e) gqt[(g * p.d + e) * n + i0 + r] = p.scale * lanes_sum(acc[r * p.d + e]);
        }
    }
}

template <typename Work>
void on_threads(int64_t heads, int threads, Work work) {
    const int64_t count = std::max<int64_t>(1, std::min<int64_t>(threads, heads));
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < count; ++t) pool.emplace_back(work, t, count);
    work(0, count);
    for (auto& thread : pool) thread.join();
}

}  // namespace

extern "C" {

// ot (G, dv, N) and lse (G, N) written; lh/lw null for no relative logits.
void tiled_attention_forward(int64_t heads, int64_t n, int64_t d, int64_t dv, int64_t h, int64_t w, float scale,
                           const float* qt, const float* kt, const float* vt, const float* lh, const float* lw,
                           float* ot, float* lse, int threads) {
    const Problem p{heads, n, d, dv, h, w, scale, qt, kt, vt, lh, lw};
    on_threads(heads, threads, [&](int64_t first, int64_t step) { forward_heads(p, ot, lse, first, step); });
}

// gqt, gkt (G, d, N), gvt (G, dv, N), glh (G, N, H), glw (G, N, W) written from got (G, dv, N).
void tiled_attention_backward(int64_t heads, int64_t n, int64_t d, int64_t dv, int64_t h, int64_t w, float scale,
                            const float* qt, const float* kt, const float* vt, const float* lh, const float* lw,
                            const float* got, const float* ot, const float* lse, float* gqt, float* gkt, float* gvt,
                            float* glh, float* glw, int threads) {
    const Problem p{heads, n, d, dv, h, w, scale, qt, kt, vt, lh, lw};
    on_threads(heads, threads, [&](int64_t first, int64_t step) {
        backward_heads(p, got, ot, lse, gqt, gkt, gvt, glh, glw, first, step);
    });
}

}  // extern "C"
