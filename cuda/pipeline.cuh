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
 * Every function returns 0, or -1 with the error set by those two.
 *
 * Row-major [rows, cols] matrices are column-major [cols, rows], so the row-major
 * y [N, OC] = x [N, IC] W [IC, OC] is the column-major y^T = W^T x^T: a GEMM with
 * m = OC, n = N, k = IC, A = W (lda OC), B = x (ldb IC), C = y (ldc OC). */
#ifndef SAELITE_CUDA_PIPELINE_CUH
#define SAELITE_CUDA_PIPELINE_CUH

#include "kernels.cuh"
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
} sl_dev_sae;

/* acts [n, S] = the SAE's activations of x [n, D]; xin [n, D] scratch; mag [n, S]
 * scratch (gated only). */
static int sl_sae_encode_rows(sl_pipe *p, const sl_dev_sae *s, const float *x, int n, float *xin, float *acts,
                              float *mag) {
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
        SL_LAUNCH(p, k_topk_rows, (unsigned)n, rt, sl_topk_shared_bytes(rt), acts, S, s->k);
        break;
    case SL_ARCH_GATED:
        SL_TRY(sl_conv1d(p, mag, xin, s->W_mag, s->b_mag, n, D, S));
        SL_LAUNCH(p, k_gated, sl_ew_grid(p, nS), p->ew_threads, 0, acts, mag, nS);
        break;
    }
    return 0;
}

#endif
