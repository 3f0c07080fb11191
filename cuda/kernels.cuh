/* kernels.cuh: the CUDA kernels of the backend.
 *
 * Written so that their bodies also compile as host C++ under the launch
 * emulator (emulate.h, -DSL_CUDA_EMULATE), where tests/cuda/test_kernels_emulated
 * runs them on the CPU fixtures: kernels use only the macros below (thread and
 * block indices, barriers, dynamic shared memory, atomicAdd), no warp intrinsics.
 * Their per-element math is the SL_HD code of engine/model_math.h and
 * engine/sae_math.h, the same functions the CPU backend calls.
 *
 * Conventions: row kernels run one block per row, with a power-of-two block of
 * threads that stride over the row; element-wise kernels are grid-stride loops.
 * Shapes use llm.c's letters: B sequences of T tokens, N = B*T rows, C = d_model,
 * NH heads of HS = C/NH, F = d_mlp; the SAE has D = d_in, S = d_sae. */
#ifndef SAELITE_CUDA_KERNELS_CUH
#define SAELITE_CUDA_KERNELS_CUH

#include <stddef.h>
#include <stdint.h>

#ifdef SL_CUDA_EMULATE
#include "emulate.h"
#else
#include <cuda_runtime.h>
typedef cudaStream_t sl_stream;
#define SL_KERNEL __global__ static void
#define SL_DEV __device__ static inline
#define SL_TX threadIdx.x
#define SL_BX blockIdx.x
#define SL_NTX blockDim.x
#define SL_NBX gridDim.x
#define SL_SYNC() __syncthreads()
#define SL_SHARED(T, name)                                                                                   \
    extern __shared__ __align__(16) unsigned char sl_shared_mem_[];                                                            \
    T *name = (T *)sl_shared_mem_
#define SL_ATOMIC_ADD(p, v) atomicAdd((p), (v))
#define SL_RUN_KERNEL(kernel, grid, block, smem, stream, ...) kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#endif

#include "model_math.h"
#include "sae_math.h"

/* ---- block reductions (blockDim.x a power of two; every thread must call) --- */

/* Sum of v over the block; red has blockDim.x slots. */
SL_DEV double sl_block_sum_d(double *red, double v) {
    const unsigned t = SL_TX;
    red[t] = v;
    SL_SYNC();
    for (unsigned s = SL_NTX / 2; s > 0; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        SL_SYNC();
    }
    double r = red[0];
    SL_SYNC(); /* red may be reused at once */
    return r;
}

SL_DEV float sl_block_sum_f(float *red, float v) {
    const unsigned t = SL_TX;
    red[t] = v;
    SL_SYNC();
    for (unsigned s = SL_NTX / 2; s > 0; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        SL_SYNC();
    }
    float r = red[0];
    SL_SYNC();
    return r;
}

SL_DEV float sl_block_max_f(float *red, float v) {
    const unsigned t = SL_TX;
    red[t] = v;
    SL_SYNC();
    for (unsigned s = SL_NTX / 2; s > 0; s >>= 1) {
        if (t < s) red[t] = red[t + s] > red[t] ? red[t + s] : red[t];
        SL_SYNC();
    }
    float r = red[0];
    SL_SYNC();
    return r;
}

#define SL_GRID_STRIDE(i, n)                                                                                 \
    for (size_t i = (size_t)SL_BX * SL_NTX + SL_TX; i < (n); i += (size_t)SL_NBX * SL_NTX)

/* ---- model ------------------------------------------------------------------ */

/* x [N, C] = wte[ids[n]] + wpe[n % T]. */
SL_KERNEL k_embed(float *x, const int32_t *ids, const float *wte, const float *wpe, int N, int T, int C) {
    SL_GRID_STRIDE(i, (size_t)N * (size_t)C) {
        size_t n = i / (size_t)C, c = i % (size_t)C;
        x[i] = wte[(size_t)ids[n] * (size_t)C + c] + wpe[(n % (size_t)T) * (size_t)C + c];
    }
}

/* out [n, OC] = bias broadcast over rows (the GEMM then accumulates onto it). */
SL_KERNEL k_bias_rows(float *out, const float *bias, size_t n, int OC) {
    SL_GRID_STRIDE(i, n * (size_t)OC) out[i] = bias[i % (size_t)OC];
}

/* One block per row: out [N, C] = LayerNorm(in) * w + b; double reductions as
 * sl_layer_norm_row. out may alias in. Shared: blockDim doubles. */
SL_KERNEL k_layernorm(float *out, const float *in, const float *w, const float *b, int C, float eps) {
    SL_SHARED(double, red);
    const float *x = in + (size_t)SL_BX * (size_t)C;
    float *y = out + (size_t)SL_BX * (size_t)C;
    double s = 0.0;
    for (int i = (int)SL_TX; i < C; i += (int)SL_NTX) s += x[i];
    double mean = sl_block_sum_d(red, s) / (double)C;
    double ss = 0.0;
    for (int i = (int)SL_TX; i < C; i += (int)SL_NTX) {
        double c = (double)x[i] - mean;
        ss += c * c;
    }
    float rstd = sl_ln_rstd(sl_block_sum_d(red, ss) / (double)C, eps);
    float m = (float)mean;
    for (int i = (int)SL_TX; i < C; i += (int)SL_NTX) y[i] = sl_ln_apply(x[i], m, rstd, w[i], b[i]);
}

/* qkv [N, 3C] (per row Q | K | V, head h at columns h*HS) -> q, k, v [B*NH, T, HS]. */
SL_KERNEL k_permute_qkv(float *q, float *k, float *v, const float *qkv, int B, int T, int NH, int HS) {
    const size_t C = (size_t)NH * (size_t)HS;
    SL_GRID_STRIDE(i, (size_t)B * (size_t)T * C) {
        size_t d = i % (size_t)HS, t = i / (size_t)HS % (size_t)T, bh = i / ((size_t)HS * (size_t)T);
        size_t b = bh / (size_t)NH, h = bh % (size_t)NH;
        const float *src = qkv + (b * (size_t)T + t) * 3 * C + h * (size_t)HS + d;
        q[i] = src[0];
        k[i] = src[C];
        v[i] = src[2 * C];
    }
}

/* yp [B*NH, T, HS] -> y [N, C] with the heads side by side. */
SL_KERNEL k_unpermute(float *y, const float *yp, int B, int T, int NH, int HS) {
    const size_t C = (size_t)NH * (size_t)HS;
    SL_GRID_STRIDE(i, (size_t)B * (size_t)T * C) {
        size_t d = i % (size_t)HS, t = i / (size_t)HS % (size_t)T, bh = i / ((size_t)HS * (size_t)T);
        size_t b = bh / (size_t)NH, h = bh % (size_t)NH;
        y[(b * (size_t)T + t) * C + h * (size_t)HS + d] = yp[i];
    }
}

/* One block per row of att [B*NH*T, T]: row t of its (sequence, head) keeps its
 * first t + 1 scores softmaxed and zeroes the rest (sl_softmax_causal_row).
 * Shared: blockDim floats. */
SL_KERNEL k_softmax_causal(float *att, int T) {
    SL_SHARED(float, red);
    float *row = att + (size_t)SL_BX * (size_t)T;
    const int len = (int)(SL_BX % (unsigned)T) + 1;
    float mx = row[0];
    for (int j = (int)SL_TX; j < len; j += (int)SL_NTX) mx = row[j] > mx ? row[j] : mx;
    mx = sl_block_max_f(red, mx);
    float sum = 0.0f;
    for (int j = (int)SL_TX; j < len; j += (int)SL_NTX) {
        float e = sl_softmax_exp(row[j], mx);
        row[j] = e;
        sum += e;
    }
    float inv = 1.0f / sl_block_sum_f(red, sum);
    for (int j = (int)SL_TX; j < T; j += (int)SL_NTX) row[j] = j < len ? row[j] * inv : 0.0f;
}

/* h [n] = GELU(h): erf != 0 the exact form, else the tanh approximation. */
SL_KERNEL k_gelu(float *h, size_t n, int erf) {
    SL_GRID_STRIDE(i, n) h[i] = erf ? sl_gelu_erf(h[i]) : sl_gelu_tanh(h[i]);
}

/* x [n] += d [n] (the residual stream). */
SL_KERNEL k_add(float *x, const float *d, size_t n) {
    SL_GRID_STRIDE(i, n) x[i] += d[i];
}

/* One block per row of x [N, D]: subtract the row's mean (centred writing
 * weights), as the CPU backend. Shared: blockDim doubles. */
SL_KERNEL k_center_rows(float *x, int D) {
    SL_SHARED(double, red);
    float *row = x + (size_t)SL_BX * (size_t)D;
    double s = 0.0;
    for (int i = (int)SL_TX; i < D; i += (int)SL_NTX) s += row[i];
    float mean = sl_center_mean(sl_block_sum_d(red, s), D);
    for (int i = (int)SL_TX; i < D; i += (int)SL_NTX) row[i] -= mean;
}

/* dst [n, D] = src rows [rows[j]]: the rows that go to the SAE, compacted. */
SL_KERNEL k_gather_rows(float *dst, const float *src, const int32_t *rows, size_t n, int D) {
    SL_GRID_STRIDE(i, n * (size_t)D) dst[i] = src[(size_t)rows[i / (size_t)D] * (size_t)D + i % (size_t)D];
}

/* ---- SAE -------------------------------------------------------------------- */

enum { SL_K_NORM_NONE = 0, SL_K_NORM_CONSTANT = 1, SL_K_NORM_LAYER = 2 }; /* = sl_norm */

/* One block per row: xin [n, D] = normalize(x) - b_dec (b_dec NULL: not applied),
 * as sl_sae_encode. Shared: blockDim doubles. */
SL_KERNEL k_sae_input(float *xin, const float *x, const float *b_dec, int D, int norm) {
    SL_SHARED(double, red);
    const float *src = x + (size_t)SL_BX * (size_t)D;
    float *dst = xin + (size_t)SL_BX * (size_t)D;
    float scale = 1.0f, shift = 0.0f;
    if (norm == SL_K_NORM_CONSTANT) {
        double ss = 0.0;
        for (int i = (int)SL_TX; i < D; i += (int)SL_NTX) ss += (double)src[i] * src[i];
        scale = sl_constant_norm_scale(sl_block_sum_d(red, ss), D);
    } else if (norm == SL_K_NORM_LAYER) {
        double s = 0.0;
        for (int i = (int)SL_TX; i < D; i += (int)SL_NTX) s += src[i];
        double mean = sl_block_sum_d(red, s) / D;
        double ss = 0.0;
        for (int i = (int)SL_TX; i < D; i += (int)SL_NTX) ss += (src[i] - mean) * (src[i] - mean);
        shift = (float)mean;
        scale = sl_layer_norm_inv(sl_block_sum_d(red, ss), D);
    }
    for (int i = (int)SL_TX; i < D; i += (int)SL_NTX) {
        float v = (src[i] - shift) * scale;
        dst[i] = b_dec ? v - b_dec[i] : v;
    }
}

SL_KERNEL k_relu(float *a, size_t n) {
    SL_GRID_STRIDE(i, n) a[i] = sl_relu(a[i]);
}

/* a [n/S, S] = jumprelu(a, threshold [S]). */
SL_KERNEL k_jumprelu(float *a, const float *threshold, size_t n, int S) {
    SL_GRID_STRIDE(i, n) a[i] = sl_jumprelu(a[i], threshold[i % (size_t)S]);
}

/* a [n] = gated(gate pre-activation a, magnitude pre-activation mag). */
SL_KERNEL k_gated(float *a, const float *mag, size_t n) {
    SL_GRID_STRIDE(i, n) a[i] = sl_gated(a[i], mag[i]);
}

/* a [n/S, S] *= dec_norm [S] (topk with rescale_acts_by_decoder_norm). */
SL_KERNEL k_scale_cols(float *a, const float *dec_norm, size_t n, int S) {
    SL_GRID_STRIDE(i, n) a[i] *= dec_norm[i % (size_t)S];
}

/* Shared floats-worth of k_topk_rows: histogram, scan, state. */
static inline size_t sl_topk_shared_bytes(unsigned threads) { return (256 + (size_t)threads + 4) * sizeof(uint32_t); }

/* The k-th largest order key of row [S] (k < S) and how many keys equal to it are
 * kept (ties go to the lower feature ids, as the CPU). Radix select on
 * sl_f32_order_key, 8 bits a pass from the top: each pass histograms the keys
 * that share the prefix found so far and picks the bin holding the k-th largest.
 * Every thread of the block calls it. sh: sl_topk_shared_bytes. */
SL_DEV void sl_topk_select(const float *row, int S, int k, uint32_t *sh, uint32_t *kth_key, uint32_t *n_ties) {
    uint32_t *hist = sh;                /* [256] */
    uint32_t *state = sh + 256 + SL_NTX; /* [2]: chosen bin, count above it */
    const unsigned t = SL_TX, nt = SL_NTX;
    uint32_t prefix = 0, mask = 0, remaining = (uint32_t)k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (unsigned i = t; i < 256; i += nt) hist[i] = 0;
        SL_SYNC();
        for (int i = (int)t; i < S; i += (int)nt) {
            uint32_t key = sl_f32_order_key(row[i]);
            if ((key & mask) == prefix) SL_ATOMIC_ADD(&hist[(key >> shift) & 255u], 1u);
        }
        SL_SYNC();
        if (t == 0) {
            uint32_t cum = 0;
            int bin = 255;
            for (; bin > 0 && cum + hist[bin] < remaining; bin--) cum += hist[bin];
            state[0] = (uint32_t)bin;
            state[1] = cum;
        }
        SL_SYNC();
        prefix |= state[0] << shift;
        mask |= 255u << shift;
        remaining -= state[1];
        SL_SYNC(); /* state and hist are rewritten by the next pass */
    }
    *kth_key = prefix;
    *n_ties = remaining;
}

/* Inclusive prefix sum of v over the block (Hillis-Steele); scan has blockDim
 * slots; *total gets the block's sum. Every thread calls it. */
SL_DEV uint32_t sl_block_scan_u32(uint32_t *scan, uint32_t v, uint32_t *total) {
    const unsigned t = SL_TX, nt = SL_NTX;
    scan[t] = v;
    SL_SYNC();
    for (unsigned off = 1; off < nt; off <<= 1) {
        uint32_t add = t >= off ? scan[t - off] : 0;
        SL_SYNC();
        scan[t] += add;
        SL_SYNC();
    }
    uint32_t r = scan[t];
    *total = scan[nt - 1];
    SL_SYNC(); /* scan may be reused at once */
    return r;
}

/* One block per row of a [rows, S]: keeps the k largest pre-activations relu'd
 * (ties to the lower feature id, as the CPU), zeroes the rest. After
 * sl_topk_select, `above` keys are strictly larger than the k-th and n_ties of
 * the keys equal to it are kept, in feature order (a block-wide prefix count per
 * tile of blockDim features). */
SL_KERNEL k_topk_rows(float *a, int S, int k) {
    SL_SHARED(uint32_t, sh);
    uint32_t *scan = sh + 256; /* [blockDim] */
    float *row = a + (size_t)SL_BX * (size_t)S;
    const unsigned t = SL_TX, nt = SL_NTX;
    if (k >= S) { /* uniform over the block: no barrier is skipped by some threads only */
        for (int i = (int)t; i < S; i += (int)nt) row[i] = sl_relu(row[i]);
        return;
    }
    uint32_t kth, n_ties;
    sl_topk_select(row, S, k, sh, &kth, &n_ties);
    uint32_t carry = 0;
    for (int base = 0; base < S; base += (int)nt) {
        int i = base + (int)t;
        uint32_t key = i < S ? sl_f32_order_key(row[i]) : 0;
        uint32_t tie = i < S && key == kth, total;
        uint32_t rank = carry + sl_block_scan_u32(scan, tie, &total) - tie; /* ties before this one */
        if (i < S) row[i] = sl_topk_value(row[i], key > kth || (tie && rank < n_ties));
        carry += total;
    }
}

/* Top-k straight to CSR: one block per row of the pre-activations a [rows, S]
 * (not modified). Row r's kept nonzero activations go, in ascending feature
 * order, to col/val [r * k, r * k + cnt[r]): the CSR with row_ptr = k * r,
 * compacted to cnt[r] <= k when fewer than k of the kept values are > 0 (the
 * host closes the gaps as it appends the rows). The same selection as
 * k_topk_rows, so the same entries as k_topk_rows followed by a dense -> CSR. */
SL_KERNEL k_topk_csr(const float *a, int S, int k, int32_t *col, float *val, int32_t *cnt) {
    SL_SHARED(uint32_t, sh);
    uint32_t *scan = sh + 256; /* [blockDim] */
    const float *row = a + (size_t)SL_BX * (size_t)S;
    const unsigned t = SL_TX, nt = SL_NTX;
    int32_t *rcol = col + (size_t)SL_BX * (size_t)k;
    float *rval = val + (size_t)SL_BX * (size_t)k;
    uint32_t kth = 0, n_ties = 0;
    const int all = k >= S; /* uniform over the block */
    if (!all) sl_topk_select(row, S, k, sh, &kth, &n_ties);
    uint32_t tie_carry = 0, out_carry = 0;
    for (int base = 0; base < S; base += (int)nt) {
        int i = base + (int)t;
        uint32_t key = i < S ? sl_f32_order_key(row[i]) : 0;
        int selected = i < S && all;
        if (!all) {
            uint32_t tie = i < S && key == kth, total;
            uint32_t rank = tie_carry + sl_block_scan_u32(scan, tie, &total) - tie;
            selected = i < S && (key > kth || (tie && rank < n_ties));
            tie_carry += total;
        }
        float v = selected ? sl_topk_value(row[i], 1) : 0.0f;
        uint32_t keep = v > 0.0f, total;
        uint32_t at = out_carry + sl_block_scan_u32(scan, keep, &total) - keep;
        if (keep) {
            rcol[at] = i;
            rval[at] = v;
        }
        out_carry += total;
    }
    if (t == 0) cnt[SL_BX] = (int32_t)out_carry;
}

/* One block per encoded row: the reconstruction error in the SAE's input space,
 * as sl_sae_add_recon. xin [n, D]: normalized input minus b_dec when applied
 * (sl_sae_encode_rows left it so); the row's nonzeros are col/val [start, start +
 * len) with start = off[r], len = off[r + 1] - off[r] (off from DenseToSparse), or
 * start = r * stride, len = cnt[r] (k_topk_csr; off NULL). x_hat = b_dec +
 * sum_f a_f W_dec[f] in f32 (a_f / dec_norm[f] with rescale), summed in the
 * row's feature order; err and x in double. sums [n, 2] = (sum err^2, sum x^2).
 * Shared: blockDim doubles. */
SL_KERNEL k_recon_rows(const float *xin, const int32_t *off, const int32_t *cnt, int stride, const int32_t *col,
                       const float *val, const float *W_dec, const float *b_dec, const float *dec_norm,
                       int b_dec_in_input, int D, double *sums) {
    SL_SHARED(double, red);
    const size_t r = SL_BX;
    const float *xp = xin + r * (size_t)D;
    const size_t start = off ? (size_t)off[r] : r * (size_t)stride;
    const size_t len = off ? (size_t)(off[r + 1] - off[r]) : (size_t)cnt[r];
    double err = 0.0, xx = 0.0;
    for (int d = (int)SL_TX; d < D; d += (int)SL_NTX) {
        float xh = 0.0f;
        for (size_t j = start; j < start + len; j++) {
            int f = col[j];
            float c = dec_norm ? val[j] / dec_norm[f] : val[j];
            xh += c * W_dec[(size_t)f * (size_t)D + (size_t)d];
        }
        double b = b_dec[d];
        double xn = (double)xp[d] + (b_dec_in_input ? b : 0.0);
        double e = (double)xh + b - xn;
        err += e * e;
        xx += xn * xn;
    }
    err = sl_block_sum_d(red, err);
    xx = sl_block_sum_d(red, xx);
    if (SL_TX == 0) {
        sums[2 * r] = err;
        sums[2 * r + 1] = xx;
    }
}

/* x_sum [D] += sum over the n rows of the normalized input (xin plus b_dec when
 * it was subtracted), in row order, in double. */
SL_KERNEL k_recon_col_sums(const float *xin, size_t n, int D, const float *b_dec, int b_dec_in_input,
                           double *x_sum) {
    SL_GRID_STRIDE(d, (size_t)D) {
        double b = b_dec_in_input ? (double)b_dec[d] : 0.0, s = 0.0;
        for (size_t r = 0; r < n; r++) s += (double)xin[r * (size_t)D + d] + b;
        x_sum[d] += s;
    }
}

/* x [n] = 0 (doubles). */
SL_KERNEL k_zero_d(double *x, size_t n) {
    SL_GRID_STRIDE(i, n) x[i] = 0.0;
}

#endif
