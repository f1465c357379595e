// Exact softmax attention with 2-D relative logits on the CPU, fused in tiles.
//
// Bello et al., "Attention Augmented Convolutional Networks" (ICCV 2019), Sec. 3.1-3.2: the logit
// of query i = (y_i, x_i) and key j = (y, x) is
//     scale q_i.(k_j + rh[y - y_i + H - 1] + rw[x - x_i + W - 1])
// (rh, rw: the relative embeddings of rows and columns). The per-query relative logits
// lh[i, y] = scale q_i.rh[y - y_i + H - 1] and lw[i, x] are computed per tile, never stored.
//
// FlashAttention's recipe (Dao et al. 2022; the backward pass of FlashAttention-2, Dao 2023): a
// tile of kRows queries meets the keys in chunks of whole key rows, so a chunk of logits lives in
// the core's first-level cache, and kTiles tiles share each pass over the keys, so every chunk of
// keys and values loaded serves kTiles * kRows queries; the forward
// pass keeps a running maximum and sum per query (online softmax) and one log-sum-exp, from which
// the backward pass recomputes each chunk. Memory: O(kRows * chunk) per thread beyond the inputs
// and outputs; never an N x N tensor. The weights are computed as 2^(log2(e) s) (the tile's
// logits carry the factor log2(e)), so each exponential is one polynomial and an add to the
// exponent bits. The small products are register-blocked: a vector loaded from the cache serves
// several multiply-adds.
//
// Layout (float32, contiguous): per head g of G, the transposed projections qt, kt (d, N),
// vt (dv, N) and the output ot (dv, N); lse (N). Shared by every head, transposed alike: the tables
// rht (d, 2H - 1) and rwt (d, 2W - 1), or null pointers for no positions; their gradients are
// written per head, (G, d, 2H - 1) and (G, d, 2W - 1), for the caller to sum in a fixed order.
// Heads are split across `threads` threads, so every output has one writer.
//
// Vectors: the GCC/Clang vector extension (8 floats; 16 for the exponentials), so the source
// builds on any target; built by aalib/native.py with -O3 -march=native -fopenmp-simd (the
// `omp simd` loops vectorise, no OpenMP runtime).

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

// The exponentials run on 16 floats at a time: one AVX-512 register, or two AVX2 ones. On an
// AVX-512 core that is half the instructions of 8-float vectors, which bound those passes.
typedef float vec16 __attribute__((vector_size(64)));
typedef float vec16u __attribute__((vector_size(64), aligned(4)));
typedef int32_t ivec16 __attribute__((vector_size(64)));
constexpr int kWide = 16;

inline vec16 load16(const float* x) { return *reinterpret_cast<const vec16u*>(x); }
inline void store16(float* x, vec16 v) { *reinterpret_cast<vec16u*>(x) = v; }

// Up to 16 floats from x (the rest 0), and back.
inline vec16 load16_part(const float* x, int64_t count) {
    vec16 v = {};
    for (int64_t l = 0; l < count; ++l) v[l] = x[l];
    return v;
}
inline void store16_part(float* x, int64_t count, vec16 v) {
    for (int64_t l = 0; l < count; ++l) x[l] = v[l];
}

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2 = 0.693147180559945309f;

// 2^x for x <= 0 (softmax's logits less their maximum, in base 2): x = n + f with n = round(x) and
// |f| <= 1/2; 2^f by a degree-6 polynomial fitted to it on [-1/2, 1/2] (relative error below
// 1e-7 in float32), and 2^n added to its exponent bits. x is clamped at -125, where float32 is
// still normal: below it the result is 2^-125 (about 2e-38) instead of smaller.
inline vec16 exp2_nonpositive(vec16 x) {
    constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: x + kRound holds round(x) in its low bits
    x = x > -125.0f ? x : vec16{} - 125.0f;
    const vec16 t = x + kRound;
    const vec16 f = x - (t - kRound);
    vec16 p = 1.5345764404628426e-4f * f + 1.3399930903688073e-3f;
    p = p * f + 9.618489071726799e-3f;
    p = p * f + 5.550328642129898e-2f;
    p = p * f + 2.4022646248340607e-1f;
    p = p * f + 6.931471824645996e-1f;
    p = p * f + 1.0f;
    return (vec16)((ivec16)p + ((ivec16)t << 23));  // (bits of t) << 23 = round(x) << 23
}

// row[j] = 2^(row[j] - top) for j < len; returns their sum.
float exp2_row(float* __restrict row, int64_t len, float top) {
    vec16 s0 = {}, s1 = {};
    int64_t j = 0;
    for (; j + 2 * kWide <= len; j += 2 * kWide) {
        const vec16 p0 = exp2_nonpositive(load16(row + j) - top), p1 = exp2_nonpositive(load16(row + j + kWide) - top);
        store16(row + j, p0);
        store16(row + j + kWide, p1);
        s0 += p0;
        s1 += p1;
    }
    for (; j < len; j += kWide) {
        const int64_t count = std::min<int64_t>(kWide, len - j);
        vec16 p = exp2_nonpositive(load16_part(row + j, count) - top);
        store16_part(row + j, count, p);
        for (int64_t l = count; l < kWide; ++l) p[l] = 0.0f;
        s0 += p;
    }
    s0 += s1;
    float total = 0.0f;
    for (int l = 0; l < kWide; ++l) total += s0[l];
    return total;
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

// The three small products of a tile, on kRows rows `ld` apart and `count` columns `stride` apart
// (count = d or dv); coefficients are (count, kRows). Each is register-blocked over V vectors of 8
// keys or E columns, so that one load serves several multiply-adds, with a narrower block for the
// remainder.

// out[r][j .. j + 8V) (+)= sum_e coef[e][r] cols[e][j .. j + 8V)
template <int V>
inline void rows_block(const float* coef, const float* cols, int64_t stride, int64_t count, int64_t j, float* out,
                       int64_t ld, bool accumulate) {
    vec8 a[V][kRows];
    for (int r = 0; r < kRows; ++r)
        for (int u = 0; u < V; ++u) a[u][r] = accumulate ? load(out + r * ld + j + 8 * u) : vec8{};
    for (int64_t e = 0; e < count; ++e) {
        vec8 c[V];
        for (int u = 0; u < V; ++u) c[u] = load(cols + e * stride + j + 8 * u);
        const float* k = coef + e * kRows;
        for (int r = 0; r < kRows; ++r)
            for (int u = 0; u < V; ++u) a[u][r] += k[r] * c[u];
    }
    for (int r = 0; r < kRows; ++r)
        for (int u = 0; u < V; ++u) store(out + r * ld + j + 8 * u, a[u][r]);
}

// out[r][j] (+)= sum_e coef[e][r] cols[e][j] for j < len; with `accumulate` false, out starts at 0.
void rows_from_cols(const float* coef, const float* cols, int64_t stride, int64_t count, int64_t len, float* out,
                    int64_t ld, bool accumulate) {
    int64_t j = 0;
    for (; j + 16 <= len; j += 16) rows_block<2>(coef, cols, stride, count, j, out, ld, accumulate);
    for (; j + 8 <= len; j += 8) rows_block<1>(coef, cols, stride, count, j, out, ld, accumulate);
    for (; j < len; ++j) {
        for (int r = 0; r < kRows; ++r) {
            float a = accumulate ? out[r * ld + j] : 0.0f;
            for (int64_t e = 0; e < count; ++e) a += coef[e * kRows + r] * cols[e * stride + j];
            out[r * ld + j] = a;
        }
    }
}

// acc[r][e .. e + E) += sum_j rows[r][j] cols[e .. e + E)[j] (lane-wise partial sums; acc is (kRows, count))
template <int E>
inline void dots_block(const float* rows, int64_t ld, const float* cols, int64_t stride, int64_t count, int64_t e,
                       int64_t len, vec8* acc) {
    vec8 a[E][kRows];
    for (int r = 0; r < kRows; ++r)
        for (int u = 0; u < E; ++u) a[u][r] = acc[r * count + e + u];
    int64_t j = 0;
    for (; j + 8 <= len; j += 8) {
        vec8 c[E];
        for (int u = 0; u < E; ++u) c[u] = load(cols + (e + u) * stride + j);
        for (int r = 0; r < kRows; ++r) {
            const vec8 x = load(rows + r * ld + j);
            for (int u = 0; u < E; ++u) a[u][r] += x * c[u];
        }
    }
    for (; j < len; ++j)
        for (int r = 0; r < kRows; ++r)
            for (int u = 0; u < E; ++u) a[u][r][0] += rows[r * ld + j] * cols[(e + u) * stride + j];
    for (int r = 0; r < kRows; ++r)
        for (int u = 0; u < E; ++u) acc[r * count + e + u] = a[u][r];
}

// acc[r][e] += sum_j rows[r][j] cols[e][j] for j < len.
void dots_into(const float* rows, int64_t ld, const float* cols, int64_t stride, int64_t count, int64_t len,
               vec8* acc) {
    int64_t e = 0;
    for (; e + 2 <= count; e += 2) dots_block<2>(rows, ld, cols, stride, count, e, len, acc);
    for (; e < count; ++e) dots_block<1>(rows, ld, cols, stride, count, e, len, acc);
}

// cols[e .. e + E)[j] += sum_r coef[e .. e + E)[r] rows[r][j] for j < len
template <int E>
inline void cols_block(const float* coef, const float* rows, int64_t ld, int64_t e, int64_t len, float* cols,
                       int64_t stride) {
    float k[E][kRows];
    for (int u = 0; u < E; ++u)
        for (int r = 0; r < kRows; ++r) k[u][r] = coef[(e + u) * kRows + r];
    int64_t j = 0;
    for (; j + 16 <= len; j += 16) {
        vec8 x[E][2];
        for (int u = 0; u < E; ++u) {
            x[u][0] = load(cols + (e + u) * stride + j);
            x[u][1] = load(cols + (e + u) * stride + j + 8);
        }
        for (int r = 0; r < kRows; ++r) {
            const vec8 y0 = load(rows + r * ld + j), y1 = load(rows + r * ld + j + 8);
            for (int u = 0; u < E; ++u) {
                x[u][0] += k[u][r] * y0;
                x[u][1] += k[u][r] * y1;
            }
        }
        for (int u = 0; u < E; ++u) {
            store(cols + (e + u) * stride + j, x[u][0]);
            store(cols + (e + u) * stride + j + 8, x[u][1]);
        }
    }
    for (; j < len; ++j)
        for (int u = 0; u < E; ++u) {
            float x = cols[(e + u) * stride + j];
            for (int r = 0; r < kRows; ++r) x += k[u][r] * rows[r * ld + j];
            cols[(e + u) * stride + j] = x;
        }
}

// cols[e][j] += sum_r coef[e][r] rows[r][j] for e < count, j < len.
void cols_from_rows(const float* coef, const float* rows, int64_t ld, int64_t count, int64_t len, float* cols,
                    int64_t stride) {
    int64_t e = 0;
    for (; e + 2 <= count; e += 2) cols_block<2>(coef, rows, ld, e, len, cols, stride);
    for (; e < count; ++e) cols_block<1>(coef, rows, ld, e, len, cols, stride);
}

struct Problem {
    int64_t heads, n, d, dv, h, w;
    float scale;
    const float *qt, *kt, *vt, *rht, *rwt;

    bool positions() const { return rht != nullptr; }
    // keys per chunk: whole key rows with positions (so a chunk's relative logits are rows of lh)
    int64_t chunk() const { return positions() ? std::max<int64_t>(1, kChunk / w) * w : kChunk; }
    // floats of `count` rows of keys in chunk order (pack_chunks): every chunk, the last too, is
    // (count, chunk())
    int64_t packed(int64_t count) const { return count * ((n + chunk() - 1) / chunk()) * chunk(); }
};

// out[y] = sum_e coef[e] table[e][y] for y < count: coef's d entries `step` apart, the table's rows
// (d of them) `stride` apart.
void relative_logits(const float* coef, int64_t step, int64_t d, const float* table, int64_t stride, int64_t count,
                     float* __restrict out) {
    std::fill(out, out + count, 0.0f);
    for (int64_t e = 0; e < d; ++e) {
        const float c = coef[e * step];
        const float* __restrict row = table + e * stride;
#pragma omp simd
        for (int64_t y = 0; y < count; ++y) out[y] += c * row[y];
    }
}

// Its backward: dq[e] += factor sum_y gout[y] table[e][y] and gtable[e][y] += coef[e] gout[y].
void relative_logits_backward(const float* coef, int64_t step, int64_t d, const float* table, int64_t stride,
                              int64_t count, float factor, const float* __restrict gout, float* dq, float* gtable) {
    for (int64_t e = 0; e < d; ++e) {
        const float c = coef[e * step];
        const float* __restrict row = table + e * stride;
        float* __restrict grow = gtable + e * stride;
        float a = 0.0f;
#pragma omp simd reduction(+ : a)
        for (int64_t y = 0; y < count; ++y) {
            a += gout[y] * row[y];
            grow[y] += c * gout[y];
        }
        dq[e] += factor * a;
    }
}

// The tile's queries i0 .. i0 + kRows - 1 (rows past N are zero), in base 2: qs2[e][r] = log2(e) scale q
// and, with positions, their relative logits log2(e) lh (kRows, H) and log2(e) lw (kRows, W); with
// `qs` given, also qs[e][r] = scale q. Returns the number of rows within N.
//
// lh[r][y] = scale q_r.rh[y - y_r + H - 1] for y < H: the H embeddings from offset H - 1 - y_r on.
int load_tile(const Problem& p, int64_t g, int64_t i0, float* qs2, float* qs, float* th, float* tw) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, p.n - i0));
    const float* qt = p.qt + g * p.d * p.n;
    for (int64_t e = 0; e < p.d; ++e)
        for (int r = 0; r < kRows; ++r) {
            const float q = r < rows ? p.scale * qt[e * p.n + i0 + r] : 0.0f;
            qs2[e * kRows + r] = kLog2e * q;
            if (qs != nullptr) qs[e * kRows + r] = q;
        }
    if (p.positions()) {
        std::fill(th, th + kRows * p.h, 0.0f);
        std::fill(tw, tw + kRows * p.w, 0.0f);
        for (int r = 0; r < rows; ++r) {
            const int64_t i = i0 + r;
            relative_logits(qs2 + r, kRows, p.d, p.rht + (p.h - 1 - i / p.w), 2 * p.h - 1, p.h, th + r * p.h);
            relative_logits(qs2 + r, kRows, p.d, p.rwt + (p.w - 1 - i % p.w), 2 * p.w - 1, p.w, tw + r * p.w);
        }
    }
    return rows;
}

// A head's keys or values x (count, N) in chunk order: the chunk of keys j0 .. j0 + len - 1 is
// (count, len) with rows ld apart at out + j0 * count (out holds Problem::packed(count) floats).
// So a chunk is one block of the cache, and its rows are not a multiple of 4 KiB apart (as rows of
// N = 4096 keys would be, which puts every row into one cache set and stalls loads on earlier
// stores to aliasing addresses).
void pack_chunks(const float* x, int64_t count, int64_t n, int64_t ld, float* out) {
    for (int64_t j0 = 0; j0 < n; j0 += ld)
        for (int64_t e = 0; e < count; ++e)
            std::memcpy(out + j0 * count + e * ld, x + e * n + j0, std::min(ld, n - j0) * sizeof(float));
}

// x (count, N) from its chunk order (pack_chunks).
void unpack_chunks(const float* in, int64_t count, int64_t n, int64_t ld, float* x) {
    for (int64_t j0 = 0; j0 < n; j0 += ld)
        for (int64_t e = 0; e < count; ++e)
            std::memcpy(x + e * n + j0, in + j0 * count + e * ld, std::min(ld, n - j0) * sizeof(float));
}

// s[r][j - j0] = log2(e) (scale q_r.k_j + lh[r, y_j] + lw[r, x_j]) for the keys j0 .. j0 + len - 1,
// whose k is `keys` (d, len) with rows `ld` apart (a chunk of pack_chunks).
void chunk_logits(const Problem& p, const float* keys, const float* qs, const float* th, const float* tw, int64_t j0,
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
    rows_from_cols(qs, keys, ld, p.d, len, s, ld, p.positions());
}

// A pass over the keys serves kTiles tiles: each chunk of keys and values, loaded once from the
// second-level cache, meets kTiles * kRows queries from the first.
constexpr int kTiles = 4;

// The tiles of one pass: their first query, and how many tiles (the last pass may hold fewer).
template <typename Work>
void for_each_pass(int64_t n, Work work) {
    for (int64_t i0 = 0; i0 < n; i0 += kTiles * kRows)
        work(i0, static_cast<int>(std::min<int64_t>(kTiles, (n - i0 + kRows - 1) / kRows)));
}

struct ForwardTile {
    std::vector<float> qs2, th, tw;
    std::vector<vec8> acc;     // (kRows, dv): the running sums of P v
    float m[kRows], l[kRows];  // base-2 running maximum, running sum
    int rows = 0;

    explicit ForwardTile(const Problem& p) : qs2(p.d * kRows), th(kRows * p.h), tw(kRows * p.w), acc(kRows * p.dv) {}

    void start(const Problem& p, int64_t g, int64_t i0) {
        rows = load_tile(p, g, i0, qs2.data(), nullptr, th.data(), tw.data());
        std::fill(m, m + kRows, -INFINITY);
        std::fill(l, l + kRows, 0.0f);
        std::fill(acc.begin(), acc.end(), vec8{});
    }

    // The keys j0 .. j0 + len - 1 (keys, values: their chunk), through the buffer s (kRows, ld).
    void meet(const Problem& p, const float* keys, const float* values, int64_t j0, int64_t len, float* s, int64_t ld) {
        chunk_logits(p, keys, qs2.data(), th.data(), tw.data(), j0, len, s, ld);
        for (int r = 0; r < kRows; ++r) {  // online softmax: rescale what the earlier chunks summed
            float* row = s + r * ld;
            const float top = std::max(m[r], maximum(row, len));
            const float alpha = std::exp2(m[r] - top);
            m[r] = top;
            l[r] = l[r] * alpha + exp2_row(row, len, top);
            for (int64_t e = 0; e < p.dv; ++e) acc[r * p.dv + e] *= alpha;
        }
        dots_into(s, ld, values, ld, p.dv, len, acc.data());
    }

    void finish(const Problem& p, int64_t g, int64_t i0, float* ot, float* lse) const {
        for (int r = 0; r < rows; ++r) {
            for (int64_t e = 0; e < p.dv; ++e) ot[(g * p.dv + e) * p.n + i0 + r] = lanes_sum(acc[r * p.dv + e]) / l[r];
            lse[g * p.n + i0 + r] = kLn2 * (m[r] + std::log2(l[r]));
        }
    }
};

void forward_heads(const Problem& p, float* ot, float* lse, int64_t first, int64_t step) {
    const int64_t n = p.n, ld = p.chunk();
    std::vector<float> keys(p.packed(p.d)), values(p.packed(p.dv)), s(kRows * ld);  // the head's k, v in chunk order
    std::vector<ForwardTile> tiles(kTiles, ForwardTile(p));
    for (int64_t g = first; g < p.heads; g += step) {
        pack_chunks(p.kt + g * p.d * n, p.d, n, ld, keys.data());
        pack_chunks(p.vt + g * p.dv * n, p.dv, n, ld, values.data());
        for_each_pass(n, [&](int64_t i0, int count) {
            for (int t = 0; t < count; ++t) tiles[t].start(p, g, i0 + t * kRows);
            for (int64_t j0 = 0; j0 < n; j0 += ld)
                for (int t = 0; t < count; ++t)
                    tiles[t].meet(p, keys.data() + j0 * p.d, values.data() + j0 * p.dv, j0, std::min(ld, n - j0),
                                  s.data(), ld);
            for (int t = 0; t < count; ++t) tiles[t].finish(p, g, i0 + t * kRows, ot, lse);
        });
    }
}

// p[j] = 2^(p[j] - top) (the weights P from the base-2 logits) and ds[j] = P (ds[j] - delta) (dS from
// dP) for j < len.
void weights_and_logit_grads(float* __restrict p, float* __restrict ds, int64_t len, float top, float delta) {
    int64_t j = 0;
    for (; j + kWide <= len; j += kWide) {
        const vec16 w = exp2_nonpositive(load16(p + j) - top);
        store16(p + j, w);
        store16(ds + j, w * (load16(ds + j) - delta));
    }
    if (j < len) {
        const int64_t count = len - j;
        const vec16 w = exp2_nonpositive(load16_part(p + j, count) - top);
        store16_part(p + j, count, w);
        store16_part(ds + j, count, w * (load16_part(ds + j, count) - delta));
    }
}

struct BackwardTile {
    std::vector<float> qs2, qs, th, tw, gos, gth, gtw;  // gth, gtw: the gradients of lh, lw (kRows, H), (kRows, W)
    std::vector<vec8> acc;                              // (kRows, d): the running sums of dS k
    float top[kRows], delta[kRows];                     // base-2 log-sum-exp; delta_i = sum_j P_ij dP_ij = dO_i . O_i
    int rows = 0;

    explicit BackwardTile(const Problem& p)
        : qs2(p.d * kRows), qs(p.d * kRows), th(kRows * p.h), tw(kRows * p.w), gos(p.dv * kRows), gth(kRows * p.h),
          gtw(kRows * p.w), acc(kRows * p.d) {}

    void start(const Problem& p, int64_t g, int64_t i0, const float* got, const float* ot, const float* lse) {
        rows = load_tile(p, g, i0, qs2.data(), qs.data(), th.data(), tw.data());
        for (int r = 0; r < kRows; ++r) {
            top[r] = r < rows ? kLog2e * lse[g * p.n + i0 + r] : INFINITY;  // rows past N: P = 0
            delta[r] = 0.0f;
        }
        for (int64_t e = 0; e < p.dv; ++e)
            for (int r = 0; r < kRows; ++r) {
                const int64_t at = (g * p.dv + e) * p.n + i0 + r;
                gos[e * kRows + r] = r < rows ? got[at] : 0.0f;
                if (r < rows) delta[r] += got[at] * ot[at];
            }
        std::fill(acc.begin(), acc.end(), vec8{});
        std::fill(gtw.begin(), gtw.end(), 0.0f);
    }

    // The keys j0 .. j0 + len - 1 (keys, values: their chunk; gk, gv: their gradients' chunk),
    // through the buffers s and ds (kRows, ld).
    void meet(const Problem& p, const float* keys, const float* values, float* gk, float* gv, int64_t j0, int64_t len,
              float* s, float* ds, int64_t ld) {
        chunk_logits(p, keys, qs2.data(), th.data(), tw.data(), j0, len, s, ld);
        rows_from_cols(gos.data(), values, ld, p.dv, len, ds, ld, false);  // dP = dO_i . v_j
        for (int r = 0; r < kRows; ++r) weights_and_logit_grads(s + r * ld, ds + r * ld, len, top[r], delta[r]);
        if (p.positions()) {  // dLh_i[y] = sum_x dS_i(y, x); dLw_i[x] = sum_y dS_i(y, x)
            const int64_t y0 = j0 / p.w;
            for (int r = 0; r < rows; ++r) {
                float* th_grad = gth.data() + r * p.h;
                float* __restrict tw_grad = gtw.data() + r * p.w;
                for (int64_t yy = 0; yy < len / p.w; ++yy) {
                    const float* __restrict row = ds + r * ld + yy * p.w;
                    th_grad[y0 + yy] = sum(row, p.w);
#pragma omp simd
                    for (int64_t x = 0; x < p.w; ++x) tw_grad[x] += row[x];
                }
            }
        }
        dots_into(ds, ld, keys, ld, p.d, len, acc.data());         // dQ_i += dS_ij k_j
        cols_from_rows(qs.data(), ds, ld, p.d, len, gk, ld);       // dK_j += scale dS_ij q_i
        cols_from_rows(gos.data(), s, ld, p.dv, len, gv, ld);      // dV_j += P_ij dO_i
    }

    // dQ of the tile's queries; the relative tables' gradients of head g (gh, gw) accumulated.
    void finish(const Problem& p, int64_t g, int64_t i0, float* gqt, float* gh, float* gw, float* dq) {
        for (int r = 0; r < rows; ++r) {
            const int64_t i = i0 + r;
            std::fill(dq, dq + p.d, 0.0f);
            if (p.positions()) {  // through lh[i, y] = scale q_i.rh[y - y_i + H - 1], and lw
                const int64_t oh = p.h - 1 - i / p.w, ow = p.w - 1 - i % p.w;
                relative_logits_backward(qs.data() + r, kRows, p.d, p.rht + oh, 2 * p.h - 1, p.h, p.scale,
                                         gth.data() + r * p.h, dq, gh + oh);
                relative_logits_backward(qs.data() + r, kRows, p.d, p.rwt + ow, 2 * p.w - 1, p.w, p.scale,
                                         gtw.data() + r * p.w, dq, gw + ow);
            }
            for (int64_t e = 0; e < p.d; ++e)
                gqt[(g * p.d + e) * p.n + i] = p.scale * lanes_sum(acc[r * p.d + e]) + dq[e];
        }
    }
};

void backward_heads(const Problem& p, const float* got, const float* ot, const float* lse, float* gqt, float* gkt,
                    float* gvt, float* grht, float* grwt, int64_t first, int64_t step) {
    const int64_t n = p.n, ld = p.chunk();
    // the head's k, v and their gradients, in chunk order
    std::vector<float> keys(p.packed(p.d)), values(p.packed(p.dv)), gk(p.packed(p.d)), gv(p.packed(p.dv));
    std::vector<float> s(kRows * ld), ds(kRows * ld), dq(p.d);
    std::vector<BackwardTile> tiles(kTiles, BackwardTile(p));
    for (int64_t g = first; g < p.heads; g += step) {
        pack_chunks(p.kt + g * p.d * n, p.d, n, ld, keys.data());
        pack_chunks(p.vt + g * p.dv * n, p.dv, n, ld, values.data());
        std::fill(gk.begin(), gk.end(), 0.0f);
        std::fill(gv.begin(), gv.end(), 0.0f);
        float* gh = p.positions() ? grht + g * p.d * (2 * p.h - 1) : nullptr;  // head g's table gradients
        float* gw = p.positions() ? grwt + g * p.d * (2 * p.w - 1) : nullptr;
        if (p.positions()) {
            std::fill(gh, gh + p.d * (2 * p.h - 1), 0.0f);
            std::fill(gw, gw + p.d * (2 * p.w - 1), 0.0f);
        }
        for_each_pass(n, [&](int64_t i0, int count) {
            for (int t = 0; t < count; ++t) tiles[t].start(p, g, i0 + t * kRows, got, ot, lse);
            for (int64_t j0 = 0; j0 < n; j0 += ld)
                for (int t = 0; t < count; ++t)
                    tiles[t].meet(p, keys.data() + j0 * p.d, values.data() + j0 * p.dv, gk.data() + j0 * p.d,
                                  gv.data() + j0 * p.dv, j0, std::min(ld, n - j0), s.data(), ds.data(), ld);
            for (int t = 0; t < count; ++t) tiles[t].finish(p, g, i0 + t * kRows, gqt, gh, gw, dq.data());
        });
        unpack_chunks(gk.data(), p.d, n, ld, gkt + g * p.d * n);
        unpack_chunks(gv.data(), p.dv, n, ld, gvt + g * p.dv * n);
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

// ot (G, dv, N) and lse (G, N) written; rht/rwt null for no relative logits.
void tiled_attention_forward(int64_t heads, int64_t n, int64_t d, int64_t dv, int64_t h, int64_t w, float scale,
                           const float* qt, const float* kt, const float* vt, const float* rht, const float* rwt,
                           float* ot, float* lse, int threads) {
    const Problem p{heads, n, d, dv, h, w, scale, qt, kt, vt, rht, rwt};
    on_threads(heads, threads, [&](int64_t first, int64_t step) { forward_heads(p, ot, lse, first, step); });
}

// gqt, gkt (G, d, N), gvt (G, dv, N) and, with positions, grht (G, d, 2H - 1), grwt (G, d, 2W - 1)
// written from got (G, dv, N).
void tiled_attention_backward(int64_t heads, int64_t n, int64_t d, int64_t dv, int64_t h, int64_t w, float scale,
                            const float* qt, const float* kt, const float* vt, const float* rht, const float* rwt,
                            const float* got, const float* ot, const float* lse, float* gqt, float* gkt, float* gvt,
                            float* grht, float* grwt, int threads) {
    const Problem p{heads, n, d, dv, h, w, scale, qt, kt, vt, rht, rwt};
    on_threads(heads, threads, [&](int64_t first, int64_t step) {
        backward_heads(p, got, ot, lse, gqt, gkt, gvt, grht, grwt, first, step);
    });
}

}  // extern "C"
