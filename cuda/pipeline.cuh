/* pipeline.cuh: the sequence of kernels and GEMMs of one batch, shared by the
 * CUDA backend (backend_cuda.cu: device pointers, cuBLAS) and the emulated test
 * (tests/cuda/test_kernels_emulated.cpp: host pointers, OpenBLAS column-major).
 *
 * The includer defines, before including this file:
 *   static int sl_gemm(sl_pipe *p, int ta, int tb, int m, int n, int k, float alpha,
 *                      const float *A, int lda, long long sA, const float *B, int ldb,
 *                      long long sB, float beta, float *C, int ldc, long long sC, int batch);
 *       cublasSgemmStridedBatched semantics (column-major; ta/tb: 1 = transposed);
 *   static int sl_launched(sl_pipe *p, const char *kernel, const char *file, int line);
 *       0 when the last launch was accepted, else fills the error and returns -1.
 * and, for the chunked encode of a batch (sl_encode_batch, below), the copies and
 * events of its three streams (SL_S_*) and events (SL_EV_*):
 *   static int sl_copy(sl_pipe *p, void *dst, const void *src, size_t bytes, int stream);
 *       cudaMemcpyAsync on that stream (host <-> device, direction from the pointers);
 *   static int sl_record(sl_pipe *p, int event, int stream);    cudaEventRecord
 *   static int sl_wait(sl_pipe *p, int stream, int event);      cudaStreamWaitEvent
 *   static int sl_host_wait(sl_pipe *p, int event);             cudaEventSynchronize
 *   static int sl_dense_to_csr(sl_pipe *p, const float *dense, size_t n, int S, sl_chunk_slot *slot);
 *       dense [n, S] -> slot->d_off/d_col/d_val (32-bit CSR), slot->nnz set on return;
 *   static int sl_slot_reserve(sl_pipe *p, sl_chunk_slot *slot, size_t nnz);
 *       room for nnz entries in slot->h_col/h_val (pinned; the slot is idle).
 * Every function returns 0, or -1 with the error set by those.
 *
 * Row-major [rows, cols] matrices are column-major [cols, rows], so the row-major
 * y [N, OC] = x [N, IC] W [IC, OC] is the column-major y^T = W^T x^T: a GEMM with
 * m = OC, n = N, k = IC, A = W (lda OC), B = x (ldb IC), C = y (ldc OC). */
#ifndef SAELITE_CUDA_PIPELINE_CUH
#define SAELITE_CUDA_PIPELINE_CUH

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kernels.cuh"
#include "csr.h"
#include "model.h"
#include "sae.h"

typedef struct sl_pipe {
    sl_stream stream;
    void *blas;          /* the includer's GEMM handle */
    void *ctx;           /* the includer's error context */
    unsigned row_threads; /* threads per block of row kernels (power of two) */
    unsigned ew_threads;  /* threads per block of element-wise kernels */
    unsigned ew_blocks;   /* at most this many blocks for element-wise kernels */
} sl_pipe;

static int sl_gemm(sl_pipe *p, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                   long long sA, const float *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                   int batch);
static int sl_launched(sl_pipe *p, const char *kernel, const char *file, int line);

/* Launches kernel and checks it was accepted. */
#define SL_LAUNCH(p, kernel, grid, block, smem, ...)                                                         \
    do {                                                                                                     \
        SL_RUN_KERNEL(kernel, grid, block, smem, (p)->stream, __VA_ARGS__);                                  \
        if (sl_launched((p), #kernel, __FILE__, __LINE__)) return -1;                                        \
    } while (0)
#define SL_TRY(call)                                                                                         \
    do {                                                                                                     \
        if ((call) != 0) return -1;                                                                          \
    } while (0)

static inline unsigned sl_ew_grid(const sl_pipe *p, size_t n) {
    size_t g = (n + p->ew_threads - 1) / p->ew_threads;
    return (unsigned)(g < 1 ? 1 : g > p->ew_blocks ? p->ew_blocks : g);
}

/* ---- model ------------------------------------------------------------------ */

/* One layer's weights on the device (shapes as sl_model_layer_view). */
typedef struct sl_dev_layer {
    const float *ln1_w, *ln1_b, *attn_w, *attn_b, *attn_proj_w, *attn_proj_b;
    const float *ln2_w, *ln2_b, *fc_w, *fc_b, *mlp_proj_w, *mlp_proj_b;
} sl_dev_layer;

typedef struct sl_dev_model {
    int C, NH, F;
    float eps;
    int gelu_erf, scale_attn_weights, scale_attn_by_inverse_layer_idx;
    const float *wte;            /* [V, C] */
    const float *wpe;            /* [n_positions, C] */
    const sl_dev_layer *layers;  /* host array [n_layer] of device pointers */
} sl_dev_model;

/* Workspace of the forward pass for up to N rows (floats unless said). */
typedef struct sl_dev_model_ws {
    int32_t *ids; /* [N] */
    float *x;     /* [N, C] residual stream */
    float *buf;   /* [N, C] layer-norm output; attention y in head-major order; c_proj output */
    float *y;     /* [N, C] attention output, heads side by side */
    float *big;   /* [N, max(3C, F)] qkv, then the MLP hidden h */
    float *q, *k, *v; /* [B*NH, T, HS] each */
    float *att;   /* [B*NH, T, T] */
} sl_dev_model_ws;

/* Floats of sl_dev_model_ws for N = B*T rows (ids not counted). */
static inline size_t sl_dev_model_ws_floats(int C, int NH, int F, size_t B, size_t T) {
    size_t N = B * T, wide = (size_t)(3 * C > F ? 3 * C : F);
    return 6 * N * (size_t)C + N * wide + B * (size_t)NH * T * T;
}

/* out [N, OC] = in [N, IC] W [IC, OC] + bias (Conv1D). */
static int sl_conv1d(sl_pipe *p, float *out, const float *in, const float *W, const float *bias, int N, int IC, int OC) {
    SL_LAUNCH(p, k_bias_rows, sl_ew_grid(p, (size_t)N * OC), p->ew_threads, 0, out, bias, (size_t)N, OC);
    return sl_gemm(p, 0, 0, OC, N, IC, 1.0f, W, OC, 0, in, IC, 0, 1.0f, out, OC, 0, 1);
}

/* GPT-2 forward of ids (w->ids, [B, T], already on the device) up to hook;
 * *out points at the hook's activations [N, C] inside w (x or buf). */
static int sl_forward(sl_pipe *p, const sl_dev_model *m, const sl_dev_model_ws *w, int B, int T, sl_hook hook,
                      float **out) {
    const int C = m->C, NH = m->NH, HS = C / NH, F = m->F, N = B * T;
    const size_t NC = (size_t)N * (size_t)C;
    const unsigned rt = p->row_threads;
    SL_LAUNCH(p, k_embed, sl_ew_grid(p, NC), p->ew_threads, 0, w->x, w->ids, m->wte, m->wpe, N, T, C);
    for (int l = 0; l <= hook.layer; l++) {
        if (hook.kind == SL_HOOK_RESID_PRE && l == hook.layer) break;
        const sl_dev_layer *L = &m->layers[l];
        /* Attention: qkv [N, 3C] -> q, k, v [B*NH, T, HS]; att = softmax(scale q k^T); y = att v. */
        SL_LAUNCH(p, k_layernorm, N, rt, rt * sizeof(double), w->buf, w->x, L->ln1_w, L->ln1_b, C, m->eps);
        SL_TRY(sl_conv1d(p, w->big, w->buf, L->attn_w, L->attn_b, N, C, 3 * C));
        SL_LAUNCH(p, k_permute_qkv, sl_ew_grid(p, NC), p->ew_threads, 0, w->q, w->k, w->v, w->big, B, T, NH, HS);
        float scale = m->scale_attn_weights ? 1.0f / sqrtf((float)HS) : 1.0f;
        if (m->scale_attn_by_inverse_layer_idx) scale /= (float)(l + 1);
        const long long sQ = (long long)T * HS, sA = (long long)T * T;
        /* att [T, T] row-major per (b, h) = column-major att^T = k q^T. */
        SL_TRY(sl_gemm(p, 1, 0, T, T, HS, scale, w->k, HS, sQ, w->q, HS, sQ, 0.0f, w->att, T, sA, B * NH));
        SL_LAUNCH(p, k_softmax_causal, (unsigned)(B * NH * T), rt, rt * sizeof(float), w->att, T);
        /* yp [T, HS] row-major = column-major yp^T = v^T att^T. */
        SL_TRY(sl_gemm(p, 0, 0, HS, T, T, 1.0f, w->v, HS, sQ, w->att, T, sA, 0.0f, w->buf, HS, sQ, B * NH));
        SL_LAUNCH(p, k_unpermute, sl_ew_grid(p, NC), p->ew_threads, 0, w->y, w->buf, B, T, NH, HS);
        SL_TRY(sl_conv1d(p, w->buf, w->y, L->attn_proj_w, L->attn_proj_b, N, C, C)); /* attn_out */
        if (hook.kind == SL_HOOK_ATTN_OUT && l == hook.layer) {
            *out = w->buf;
            return 0;
        }
        SL_LAUNCH(p, k_add, sl_ew_grid(p, NC), p->ew_threads, 0, w->x, w->buf, NC);
        /* MLP: h [N, F] = GELU(ln2(x) W_fc + b_fc); mlp_out = h W_proj + b_proj. */
        SL_LAUNCH(p, k_layernorm, N, rt, rt * sizeof(double), w->buf, w->x, L->ln2_w, L->ln2_b, C, m->eps);
        SL_TRY(sl_conv1d(p, w->big, w->buf, L->fc_w, L->fc_b, N, C, F));
        const size_t NF = (size_t)N * (size_t)F;
        SL_LAUNCH(p, k_gelu, sl_ew_grid(p, NF), p->ew_threads, 0, w->big, NF, m->gelu_erf);
        SL_TRY(sl_conv1d(p, w->buf, w->big, L->mlp_proj_w, L->mlp_proj_b, N, F, C)); /* mlp_out */
        if (hook.kind == SL_HOOK_MLP_OUT && l == hook.layer) {
            *out = w->buf;
            return 0;
        }
        SL_LAUNCH(p, k_add, sl_ew_grid(p, NC), p->ew_threads, 0, w->x, w->buf, NC);
    }
    *out = w->x; /* resid_pre or resid_post of hook.layer */
    return 0;
}

/* Centres the rows of x [N, D], then gathers the rows listed in rows [n] into
 * xc [n, D] (the rows that go to the SAE, in order). */
static int sl_prepare_rows(sl_pipe *p, float *x, int N, int D, int center, const int32_t *rows, size_t n,
                           float *xc) {
    if (center) SL_LAUNCH(p, k_center_rows, (unsigned)N, p->row_threads, p->row_threads * sizeof(double), x, D);
    if (n) SL_LAUNCH(p, k_gather_rows, sl_ew_grid(p, n * (size_t)D), p->ew_threads, 0, xc, x, rows, n, D);
    return 0;
}

/* ---- SAE -------------------------------------------------------------------- */

typedef struct sl_dev_sae {
    int D, S;   /* d_in, d_sae */
    sl_arch arch;
    int k;
    sl_norm norm;
    const float *W_enc;     /* [D, S] (gated: the gate path) */
    const float *b_enc;     /* [S] (gated: b_gate) */
    const float *b_dec;     /* [D], NULL when not applied to the input */
    const float *threshold; /* [S] jumprelu */
    const float *W_mag;     /* [D, S] gated */
    const float *b_mag;     /* [S] gated */
    const float *dec_norm;  /* [S] topk with rescale, else NULL */
    const float *W_dec;     /* [S, D] decoder (reconstruction quality) */
    const float *b_dec_out; /* [D] b_dec, whether or not it is applied to the input */
} sl_dev_sae;

/* acts [n, S] = the SAE's activations of x [n, D]; xin [n, D] gets the normalized
 * input minus b_dec (if applied), as sl_sae_encode leaves it; mag [n, S] scratch
 * (gated only). topk_select 0: a top-k SAE stops at the (rescaled) pre-activations,
 * for k_topk_csr to select from. */
static int sl_sae_encode_rows(sl_pipe *p, const sl_dev_sae *s, const float *x, int n, float *xin, float *acts,
                              float *mag, int topk_select) {
    const int D = s->D, S = s->S;
    const size_t nS = (size_t)n * (size_t)S;
    const unsigned rt = p->row_threads;
    SL_LAUNCH(p, k_sae_input, (unsigned)n, rt, rt * sizeof(double), xin, x, s->b_dec, D, (int)s->norm);
    SL_TRY(sl_conv1d(p, acts, xin, s->W_enc, s->b_enc, n, D, S)); /* pre [n, S] */
    switch (s->arch) {
    case SL_ARCH_STANDARD: SL_LAUNCH(p, k_relu, sl_ew_grid(p, nS), p->ew_threads, 0, acts, nS); break;
    case SL_ARCH_JUMPRELU:
        SL_LAUNCH(p, k_jumprelu, sl_ew_grid(p, nS), p->ew_threads, 0, acts, s->threshold, nS, S);
        break;
    case SL_ARCH_TOPK:
        if (s->dec_norm) SL_LAUNCH(p, k_scale_cols, sl_ew_grid(p, nS), p->ew_threads, 0, acts, s->dec_norm, nS, S);
        if (topk_select) SL_LAUNCH(p, k_topk_rows, (unsigned)n, rt, sl_topk_shared_bytes(rt), acts, S, s->k);
        break;
    case SL_ARCH_GATED:
        SL_TRY(sl_conv1d(p, mag, xin, s->W_mag, s->b_mag, n, D, S));
        SL_LAUNCH(p, k_gated, sl_ew_grid(p, nS), p->ew_threads, 0, acts, mag, nS);
        break;
    }
    return 0;
}

/* ---- a batch, chunk by chunk ------------------------------------------------ */

enum { SL_S_COMPUTE = 0, SL_S_D2H = 1, SL_S_H2D = 2, SL_N_STREAMS = 3 };
/* Events; the per-slot ones are base + slot (0 or 1). */
enum { SL_EV_COMPUTED = 0, SL_EV_COPIED = 2, SL_EV_INPUT = 4, SL_EV_SUMS = 6, SL_N_EVENTS = 7 };

/* One of the two CSR buffers a chunk goes through: encoded into the device half
 * on the compute stream, copied to the pinned half on the D2H stream, appended
 * to the engine's CSR by the host; meanwhile the other slot holds the next chunk. */
typedef struct sl_chunk_slot {
    int32_t *d_off;  /* [K + 1] DenseToSparse row offsets, or [K] k_topk_csr counts */
    int32_t *d_col;  /* [K * S] DenseToSparse worst case, or [K * k] top-k */
    float *d_val;    /* like d_col */
    double *d_sums;  /* [K, 2] reconstruction sums per row */
    int32_t *h_off;  /* pinned, like d_off */
    int32_t *h_col;  /* pinned [h_cap] */
    float *h_val;    /* pinned [h_cap] */
    double *h_sums;  /* pinned [K, 2] */
    size_t h_cap;
    size_t n, nnz;   /* rows of the chunk it holds; entries to copy */
} sl_chunk_slot;

/* The buffers of a batch's encode (device unless said). */
typedef struct sl_batch_bufs {
    size_t chunk_rows;   /* K */
    float *d_xc;         /* [max_rows, D] the included rows, compacted */
    float *h_xc;         /* pinned [max_rows, D]: stored input, gathered on the host; NULL for model runs */
    float *d_xin;        /* [K, D] normalized SAE input */
    float *d_dense;      /* [K, S] activations (pre-activations for top-k) */
    float *d_mag;        /* [K, S] gated only */
    double *d_x_sum;     /* [D] reconstruction: sum of the normalized input */
    double *h_x_sum;     /* pinned [D] */
    sl_chunk_slot slot[2];
} sl_batch_bufs;

static int sl_copy(sl_pipe *p, void *dst, const void *src, size_t bytes, int stream);
static int sl_record(sl_pipe *p, int event, int stream);
static int sl_wait(sl_pipe *p, int stream, int event);
static int sl_host_wait(sl_pipe *p, int event);
static int sl_dense_to_csr(sl_pipe *p, const float *dense, size_t n, int S, sl_chunk_slot *slot);
static int sl_slot_reserve(sl_pipe *p, sl_chunk_slot *slot, size_t nnz);

static inline int sl_pipe_errf(sl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int sl_pipe_errf(sl_err *err, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Top-k SAEs select straight into a CSR (k_topk_csr); the others go dense -> CSR. */
static inline int sl_topk_direct(const sl_dev_sae *s) { return s->arch == SL_ARCH_TOPK; }
static inline int sl_topk_width(const sl_dev_sae *s) { return s->k < s->S ? s->k : s->S; }

/* Room for `more` entries in the engine's CSR (malloc'd memory, as csr.c). */
static inline int sl_builder_reserve(sl_csr_builder *o, size_t more, sl_err *err) {
    size_t need = (size_t)o->row_ptr[o->n_rows] + more;
    if (need <= o->nnz_cap) return 0;
    size_t cap = o->nnz_cap ? o->nnz_cap : (size_t)1 << 16;
    while (cap < need) cap *= 2;
    uint32_t *col = (uint32_t *)realloc(o->col, cap * sizeof *col);
    if (col) o->col = col;
    float *val = (float *)realloc(o->val, cap * sizeof *val);
    if (val) o->val = val;
    if (!col || !val) return sl_pipe_errf(err, "out of memory growing a CSR batch to %zu nonzeros", cap);
    o->nnz_cap = cap;
    return 0;
}

static inline int sl_builder_empty_row(sl_csr_builder *o, sl_err *err) {
    if (o->n_rows + 1 > o->rows_cap) return sl_pipe_errf(err, "CSR batch overflow (%u rows)", o->rows_cap);
    o->row_ptr[o->n_rows + 1] = o->row_ptr[o->n_rows];
    o->n_rows++;
    return 0;
}

/* Host: appends a copied chunk to out, with empty rows for the excluded batch rows
 * before each of its rows (*next_row: the batch row the next one is), and its
 * reconstruction sums to recon. Top-k rows sit at r * k, cnt[r] long. */
static int sl_append_chunk(const sl_chunk_slot *cs, int direct, int kk, const uint8_t *include, size_t *next_row,
                           sl_csr_builder *out, sl_recon_sums *recon, sl_err *err) {
    if (sl_builder_reserve(out, direct ? cs->n * (size_t)kk : cs->nnz, err)) return -1;
    for (size_t r = 0; r < cs->n; r++) {
        for (; !include[*next_row]; (*next_row)++)
            if (sl_builder_empty_row(out, err)) return -1;
        if (out->n_rows + 1 > out->rows_cap) return sl_pipe_errf(err, "CSR batch overflow (%u rows)", out->rows_cap);
        size_t start = direct ? r * (size_t)kk : (size_t)cs->h_off[r];
        size_t len = direct ? (size_t)cs->h_off[r] : (size_t)(cs->h_off[r + 1] - cs->h_off[r]);
        uint64_t at = out->row_ptr[out->n_rows];
        memcpy(out->col + at, cs->h_col + start, len * sizeof(uint32_t)); /* ids < 2^31: same bits */
        memcpy(out->val + at, cs->h_val + start, len * sizeof(float));
        out->row_ptr[++out->n_rows] = at + len;
        (*next_row)++;
        if (recon) {
            recon->err_sq += cs->h_sums[2 * r];
            recon->x_sq += cs->h_sums[2 * r + 1];
            recon->rows++;
        }
    }
    return 0;
}

/* Host: gathers the stored input's included rows of chunk [c0, c0 + n) into the
 * pinned h_xc (*src_row: the batch row to look from) and copies them to d_xc on
 * the H2D stream; SL_EV_INPUT + slot marks their arrival. */
static int sl_stage_input(sl_pipe *p, sl_batch_bufs *bb, const float *x, const uint8_t *include, int D, size_t c0,
                          size_t n, int slot, size_t *src_row) {
    float *dst = bb->h_xc + c0 * (size_t)D;
    for (size_t r = 0; r < n; r++, (*src_row)++) {
        while (!include[*src_row]) (*src_row)++;
        memcpy(dst + r * (size_t)D, x + *src_row * (size_t)D, (size_t)D * sizeof(float));
    }
    SL_TRY(sl_copy(p, bb->d_xc + c0 * (size_t)D, dst, n * (size_t)D * sizeof(float), SL_S_H2D));
    return sl_record(p, SL_EV_INPUT + slot, SL_S_H2D);
}

/* The SAE part of a batch, in chunks of K included rows, double-buffered:
 *
 *   compute  | encode j | CSR j | recon j || encode j+1 | CSR j+1 | ...
 *   D2H      |                            || copy j (CSR, sums)   || copy j+1 ...
 *   H2D      | input j+1 (stored input)   || input j+2 ...
 *   host     | gather input j+1 | wait copy j-1, append j-1 to out || ...
 *
 * Chunk j uses slot j % 2; its encode waits until the copy of chunk j - 2 (same
 * slot) has finished. x: stored input [rows, D] on the host (gathered and
 * centred here), or NULL when the caller already left the included rows,
 * centred, in bb->d_xc (model runs). n_inc: included rows. recon may be NULL. */
static int sl_encode_batch(sl_pipe *p, const sl_dev_sae *s, sl_batch_bufs *bb, const float *x, const uint8_t *include,
                           size_t rows, size_t n_inc, int center, sl_csr_builder *out, sl_recon_sums *recon,
                           sl_err *err) {
    const int D = s->D, S = s->S, direct = sl_topk_direct(s), kk = sl_topk_width(s);
    const size_t K = bb->chunk_rows, nc = (n_inc + K - 1) / K;
    const unsigned rt = p->row_threads;
    size_t src_row = 0, next_row = 0;
    if (recon) SL_LAUNCH(p, k_zero_d, sl_ew_grid(p, (size_t)D), p->ew_threads, 0, bb->d_x_sum, (size_t)D);
    if (x && nc) SL_TRY(sl_stage_input(p, bb, x, include, D, 0, n_inc < K ? n_inc : K, 0, &src_row));
    for (size_t j = 0; j < nc; j++) {
        const int slot = (int)(j & 1);
        sl_chunk_slot *cs = &bb->slot[slot];
        const size_t c0 = j * K, n = n_inc - c0 < K ? n_inc - c0 : K;
        float *xc = bb->d_xc + c0 * (size_t)D;
        if (x) {
            SL_TRY(sl_wait(p, SL_S_COMPUTE, SL_EV_INPUT + slot));
            if (center) SL_LAUNCH(p, k_center_rows, (unsigned)n, rt, rt * sizeof(double), xc, D);
        }
        if (j >= 2) SL_TRY(sl_wait(p, SL_S_COMPUTE, SL_EV_COPIED + slot)); /* the slot's last copy is done */
        SL_TRY(sl_sae_encode_rows(p, s, xc, (int)n, bb->d_xin, bb->d_dense, bb->d_mag, !direct));
        if (direct) {
            SL_LAUNCH(p, k_topk_csr, (unsigned)n, rt, sl_topk_shared_bytes(rt), bb->d_dense, S, kk, cs->d_col,
                      cs->d_val, cs->d_off);
            cs->nnz = n * (size_t)kk; /* copied whole; the host skips the gaps */
        } else {
            SL_TRY(sl_dense_to_csr(p, bb->d_dense, n, S, cs));
        }
        if (recon) {
            SL_LAUNCH(p, k_recon_rows, (unsigned)n, rt, rt * sizeof(double), bb->d_xin, direct ? NULL : cs->d_off,
                      direct ? cs->d_off : NULL, kk, cs->d_col, cs->d_val, s->W_dec, s->b_dec_out, s->dec_norm,
                      s->b_dec != NULL, D, cs->d_sums);
            SL_LAUNCH(p, k_recon_col_sums, sl_ew_grid(p, (size_t)D), p->ew_threads, 0, bb->d_xin, n, D,
                      s->b_dec_out, s->b_dec != NULL, bb->d_x_sum);
        }
        SL_TRY(sl_record(p, SL_EV_COMPUTED + slot, SL_S_COMPUTE));

        /* Chunk j's CSR to pinned memory on the D2H stream, behind its compute. */
        SL_TRY(sl_slot_reserve(p, cs, cs->nnz));
        SL_TRY(sl_wait(p, SL_S_D2H, SL_EV_COMPUTED + slot));
        SL_TRY(sl_copy(p, cs->h_off, cs->d_off, (direct ? n : n + 1) * sizeof(int32_t), SL_S_D2H));
        if (cs->nnz) {
            SL_TRY(sl_copy(p, cs->h_col, cs->d_col, cs->nnz * sizeof(int32_t), SL_S_D2H));
            SL_TRY(sl_copy(p, cs->h_val, cs->d_val, cs->nnz * sizeof(float), SL_S_D2H));
        }
        if (recon) SL_TRY(sl_copy(p, cs->h_sums, cs->d_sums, 2 * n * sizeof(double), SL_S_D2H));
        SL_TRY(sl_record(p, SL_EV_COPIED + slot, SL_S_D2H));
        cs->n = n;

        /* While the GPU works on chunk j: the next chunk's input, then chunk j - 1 to the engine. */
        if (x && j + 1 < nc) {
            size_t n1 = n_inc - c0 - n < K ? n_inc - c0 - n : K;
            SL_TRY(sl_stage_input(p, bb, x, include, D, c0 + n, n1, slot ^ 1, &src_row));
        }
        if (j >= 1) {
            SL_TRY(sl_host_wait(p, SL_EV_COPIED + (slot ^ 1)));
            SL_TRY(sl_append_chunk(&bb->slot[slot ^ 1], direct, kk, include, &next_row, out, recon, err));
        }
    }
    if (nc) {
        const int last = (int)((nc - 1) & 1);
        SL_TRY(sl_host_wait(p, SL_EV_COPIED + last));
        SL_TRY(sl_append_chunk(&bb->slot[last], direct, kk, include, &next_row, out, recon, err));
    }
    for (; next_row < rows; next_row++) SL_TRY(sl_builder_empty_row(out, err));
    if (recon) {
        SL_TRY(sl_copy(p, bb->h_x_sum, bb->d_x_sum, (size_t)D * sizeof(double), SL_S_COMPUTE));
        SL_TRY(sl_record(p, SL_EV_SUMS, SL_S_COMPUTE));
        SL_TRY(sl_host_wait(p, SL_EV_SUMS));
        for (int d = 0; d < D; d++) recon->x_sum[d] += bb->h_x_sum[d];
    }
    return 0;
}

#endif
