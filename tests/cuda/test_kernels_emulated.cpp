/* test_kernels_emulated.cpp: the CUDA kernels, run on the CPU.
 *
 * cuda/kernels.cuh and cuda/pipeline.cuh are compiled as host C++ under the launch
 * emulator (cuda/emulate.h: blocks one after another, the threads of a block as
 * cooperative fibers, __syncthreads a barrier). GEMMs are OpenBLAS column-major
 * calls with cublasSgemmStridedBatched's arguments. Against the CPU engine:
 *   1. sl_f32_order_key sorts as the floats do;
 *   2. every SAE fixture case (FIXTURES/sae): the kernels' activations equal
 *      sl_sae_encode's and the Python reference's;
 *   3. tests/data/gpt2_tiny and gpt2_tiny_f16: every hook of every layer equals
 *      sl_model_forward's rows;
 *   4. whole batches (model ids or stored activations, centring, excluded rows,
 *      standard / topk / jumprelu / gated SAEs): the CSR of the emulated pipeline
 *      matches the CPU backend's under the parity rule of tests/cuda/parity.h;
 *   5. the chunked batch of the CUDA backend (sl_encode_batch: three streams,
 *      events, two CSR slots, top-k straight to CSR, reconstruction sums), with
 *      copies deferred to the latest point a GPU may run them: the same CSR, bit
 *      for bit, as the unchunked pipeline for chunks of 1, 7 and all rows, and the
 *      CPU backend's reconstruction sums.
 * Each is run with several block sizes, so reductions, scans and grid-stride loops
 * see more than one shape. argv[1]: the fixtures dir; the model dirs are found
 * from SAELITE_SOURCE_DIR (CMake passes it). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

extern "C" {
#include "backend.h"
#include "csr.h"
#include "model.h"
#include "sae.h"
#include "safetensors.h"
}

#include <functional>
#include <vector>

#include "check.h"
#include "parity.h"
#include "test_util.h"
#include "pipeline.cuh"

/* ---- the includer's half of pipeline.cuh ---------------------------------- */

/* 1: every GEMM one output column (a row of the row-major result) at a time, so a
 * row's values do not depend on how many rows share the call (OpenBLAS's kernels
 * for different sizes may round differently): chunked and unchunked runs can
 * then be compared bit for bit. */
static int g_gemm_by_column = 0;

static int sl_gemm(sl_pipe *p, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                   long long sA, const float *B, int ldb, long long sB, float beta, float *C, int ldc, long long sC,
                   int batch) {
    (void)p;
    if (g_gemm_by_column) {
        for (int i = 0; i < batch; i++)
            for (int j = 0; j < n; j++) /* column j of op(B): B + j*ldb, or row j of B when transposed */
                cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, 1, k,
                            alpha, A + i * sA, lda, B + i * sB + (tb ? (long long)j : (long long)j * ldb), ldb, beta,
                            C + i * sC + (long long)j * ldc, ldc);
        return 0;
    }
    for (int i = 0; i < batch; i++)
        cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha,
                    A + i * sA, lda, B + i * sB, ldb, beta, C + i * sC, ldc);
    return 0;
}

static int sl_launched(sl_pipe *p, const char *kernel, const char *file, int line) {
    (void)p, (void)kernel, (void)file, (void)line;
    return 0;
}

/* Streams and events of the chunked pipeline. Kernels run at once (the compute
 * stream is the launch emulator itself), but a copy on the D2H or H2D stream only
 * happens when an event recorded after it is waited for, by a stream or by the
 * host: the latest a GPU may run it. A missing wait then reads a slot before its
 * copy, or lets a copy read a slot the next chunk already overwrote, and the
 * CSR comes out wrong. Copies on the compute stream run at once, in order. */
struct emu_streams {
    std::vector<std::function<void()>> queue[SL_N_STREAMS]; /* not yet run */
    size_t done[SL_N_STREAMS] = {0, 0, 0};                /* ops of each stream run so far */
    int ev_stream[SL_N_EVENTS];
    size_t ev_mark[SL_N_EVENTS]; /* ops of ev_stream enqueued before the record */
    unsigned long long copies = 0, deferred_max = 0, waits = 0;
};
static emu_streams g_streams;

static void emu_flush(int stream, size_t upto) {
    emu_streams &e = g_streams;
    while (e.done[stream] < upto) e.queue[stream][e.done[stream]++]();
}

static int sl_copy(sl_pipe *p, void *dst, const void *src, size_t bytes, int stream) {
    (void)p;
    emu_streams &e = g_streams;
    e.copies++;
    if (stream == SL_S_COMPUTE) {
        memcpy(dst, src, bytes);
        return 0;
    }
    e.queue[stream].push_back([=]() { memcpy(dst, src, bytes); });
    size_t pending = e.queue[stream].size() - e.done[stream];
    if (pending > e.deferred_max) e.deferred_max = pending;
    return 0;
}
static int sl_record(sl_pipe *p, int event, int stream) {
    (void)p;
    g_streams.ev_stream[event] = stream;
    g_streams.ev_mark[event] = g_streams.queue[stream].size();
    return 0;
}
static int sl_wait(sl_pipe *p, int stream, int event) {
    (void)p, (void)stream;
    g_streams.waits++;
    emu_flush(g_streams.ev_stream[event], g_streams.ev_mark[event]);
    return 0;
}
static int sl_host_wait(sl_pipe *p, int event) { return sl_wait(p, -1, event); }

/* cuSPARSE DenseToSparse: the nonzeros of dense [n, S], row by row. */
static int sl_dense_to_csr(sl_pipe *p, const float *dense, size_t n, int S, sl_chunk_slot *slot) {
    (void)p;
    size_t nnz = 0;
    slot->d_off[0] = 0;
    for (size_t r = 0; r < n; r++) {
        for (int f = 0; f < S; f++) {
            float v = dense[r * (size_t)S + (size_t)f];
            if (v != 0.0f) {
                slot->d_col[nnz] = f;
                slot->d_val[nnz++] = v;
            }
        }
        slot->d_off[r + 1] = (int32_t)nnz;
    }
    slot->nnz = nnz;
    return 0;
}
static int sl_slot_reserve(sl_pipe *p, sl_chunk_slot *slot, size_t nnz) {
    (void)p;
    if (nnz <= slot->h_cap) return 0;
    slot->h_col = (int32_t *)realloc(slot->h_col, nnz * sizeof(int32_t));
    slot->h_val = (float *)realloc(slot->h_val, nnz * sizeof(float));
    slot->h_cap = nnz;
    return slot->h_col && slot->h_val ? 0 : -1;
}

/* Block shapes tried: (row threads, element-wise threads, element-wise blocks). */
static const unsigned SHAPES[][3] = {{32, 32, 3}, {64, 128, 2}, {1, 1, 1}, {256, 64, 1000}};
enum { N_SHAPES = 4 };

static sl_pipe make_pipe(int shape) {
    sl_pipe p;
    memset(&p, 0, sizeof p);
    p.row_threads = SHAPES[shape][0];
    p.ew_threads = SHAPES[shape][1];
    p.ew_blocks = SHAPES[shape][2];
    return p;
}

static sl_dev_sae dev_sae_of(const sl_sae *s) {
    sl_dev_sae d = {s->d_in,    s->d_sae,     s->arch,  s->k,     s->norm,     s->W_enc,
                    s->b_enc,   s->apply_b_dec_to_input ? s->b_dec : NULL, s->threshold, s->W_mag,
                    s->b_mag,   s->dec_norm,  s->W_dec, s->b_dec};
    return d;
}

/* ---- 1. order keys ------------------------------------------------------------ */

static void check_order_keys(void) {
    float v[] = {-INFINITY, -3e38f, -1.5f, -1.0f, -1e-30f, -1e-45f, 0.0f, 1e-45f, 1e-30f, 1.0f, 1.5f, 3e38f, INFINITY};
    int n = (int)(sizeof v / sizeof v[0]);
    for (int i = 0; i + 1 < n; i++) CHECK(sl_f32_order_key(v[i]) < sl_f32_order_key(v[i + 1]));
    CHECK(sl_f32_order_key(-0.0f) == sl_f32_order_key(0.0f));
    for (int i = 0; i < 100000; i++) {
        float a = frand() * 100, b = frand() * 100;
        CHECK((a < b) == (sl_f32_order_key(a) < sl_f32_order_key(b)));
    }
    CHECK(sl_topk_value(2.0f, 1) == 2.0f && sl_topk_value(2.0f, 0) == 0.0f && sl_topk_value(-1.0f, 1) == 0.0f);
    printf("order keys: sorted as the floats\n");
}

/* ---- 2. SAE fixture cases ------------------------------------------------------ */

static void check_sae_case(const char *fixtures, const char *name) {
    char sae_path[4096], expect_path[4096];
    snprintf(sae_path, sizeof sae_path, "%s/sae/%s", fixtures, name);
    size_t n = strlen(name), sl = strlen(".safetensors");
    int bare = n > sl && strcmp(name + n - sl, ".safetensors") == 0;
    snprintf(expect_path, sizeof expect_path, "%s/sae/%.*s.expect.safetensors", fixtures, (int)(bare ? n - sl : n),
             name);
    sl_err err = {{0}};
    sl_sae *sae = sl_sae_load(sae_path, &err);
    sl_st *ex = sl_st_open(expect_path, &err);
    CHECK(sae && ex);
    if (!sae || !ex) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        sl_sae_free(sae);
        sl_st_close(ex);
        return;
    }
    const sl_tensor *xt = sl_st_get(ex, "x");
    int rows = xt ? (int)xt->shape[0] : 0;
    const int D = sae->d_in, S = sae->d_sae;
    int64_t xs[2] = {rows, D}, as[2] = {rows, S};
    float *x = sl_st_load_f32(ex, "x", 2, xs, &err);
    float *want = sl_st_load_f32(ex, "acts", 2, as, &err);
    float *cpu = (float *)calloc((size_t)rows * S, sizeof(float));
    float *ws = (float *)malloc(sl_sae_workspace_floats(sae, rows) * sizeof(float));
    float *xin = (float *)malloc((size_t)rows * D * sizeof(float));
    float *acts = (float *)malloc((size_t)rows * S * sizeof(float));
    float *mag = (float *)malloc((size_t)rows * S * sizeof(float));
    CHECK(x && want && cpu && ws && xin && acts && mag);
    if (x && want && cpu && ws && xin && acts && mag) {
        sl_sae_encode(sae, x, rows, cpu, ws);
        sl_dev_sae ds = dev_sae_of(sae);
        double max_cpu = 0, max_ref = 0;
        for (int shape = 0; shape < N_SHAPES; shape++) {
            sl_pipe p = make_pipe(shape);
            CHECK(sl_sae_encode_rows(&p, &ds, x, rows, xin, acts, mag, 1) == 0);
            int bad = 0;
            for (size_t i = 0; i < (size_t)rows * S; i++) {
                double dc = fabs((double)acts[i] - cpu[i]), dr = fabs((double)acts[i] - want[i]);
                if (dc > max_cpu) max_cpu = dc;
                if (dr > max_ref) max_ref = dr;
                if ((dc > 1e-5 * (1 + fabs(cpu[i])) || dr > 1e-4 * (1 + fabs(want[i]))) && bad++ < 3)
                    fprintf(stderr, "%s shape %d: row %zu feature %zu: kernels %.8g cpu %.8g reference %.8g\n", name,
                            shape, i / S, i % S, acts[i], cpu[i], want[i]);
                /* the same features are active */
                if ((acts[i] > 0) != (cpu[i] > 0) && bad++ < 3)
                    fprintf(stderr, "%s shape %d: row %zu feature %zu active in one only\n", name, shape, i / S, i % S);
            }
            CHECK(bad == 0);
        }
        printf("  %-28s %-9s max |kernels - cpu| %.2g, |kernels - reference| %.2g\n", name, sl_arch_name(sae->arch),
               max_cpu, max_ref);
    }
    free(x);
    free(want);
    free(cpu);
    free(ws);
    free(xin);
    free(acts);
    free(mag);
    sl_st_close(ex);
    sl_sae_free(sae);
}

static void check_sae_cases(const char *fixtures) {
    char list[4096], line[256];
    snprintf(list, sizeof list, "%s/sae/cases.txt", fixtures);
    FILE *f = fopen(list, "r");
    CHECK(f != NULL);
    int n = 0;
    printf("SAE fixture cases:\n");
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!*line) continue;
        check_sae_case(fixtures, line);
        n++;
    }
    if (f) fclose(f);
    CHECK(n >= 12);
}

/* A wide top-k case: rows of 3000 features with planted ties at the k-th value. */
static void check_topk_ties(void) {
    const int S = 3000, rows = 6;
    int ks[] = {1, 7, 64, 2999, 3000};
    float *a = (float *)malloc((size_t)rows * S * sizeof(float)), *b = (float *)malloc((size_t)rows * S * sizeof(float));
    int32_t *col = (int32_t *)malloc((size_t)rows * S * sizeof(int32_t));
    int32_t *cnt = (int32_t *)malloc(rows * sizeof(int32_t));
    float *val = (float *)malloc((size_t)rows * S * sizeof(float));
    int csr_rows = 0, short_rows = 0;
    for (int ki = 0; ki < 5; ki++) {
        for (int shape = 0; shape < N_SHAPES; shape++) {
            for (size_t i = 0; i < (size_t)rows * S; i++) a[i] = roundf(frand() * 40) / 8; /* many equal values */
            sl_pipe p = make_pipe(shape);
            memcpy(b, a, (size_t)rows * S * sizeof(float));
            const int kk = ks[ki] < S ? ks[ki] : S; /* as sl_topk_width */
            SL_RUN_KERNEL(k_topk_csr, (unsigned)rows, p.row_threads, sl_topk_shared_bytes(p.row_threads), 0, a, S, kk,
                          col, val, cnt);
            SL_RUN_KERNEL(k_topk_rows, (unsigned)rows, p.row_threads, sl_topk_shared_bytes(p.row_threads), 0, a, S, ks[ki]);
            /* k_topk_csr's rows are k_topk_rows' nonzeros, in feature order, at r * k */
            for (int r = 0; r < rows; r++) {
                int n = 0, same = 1;
                for (int f = 0; f < S; f++) {
                    float v = a[(size_t)r * S + f];
                    if (v == 0.0f) continue;
                    same &= n < cnt[r] && col[(size_t)r * kk + n] == f && val[(size_t)r * kk + n] == v;
                    n++;
                }
                CHECK(same && n == cnt[r] && cnt[r] <= kk);
                csr_rows++;
                short_rows += cnt[r] < kk;
            }
            /* CPU reference: sort-free, as sae.c: k-th value, then ties by feature id. */
            int bad = 0;
            for (int r = 0; r < rows; r++) {
                float *in = b + (size_t)r * S, *out = a + (size_t)r * S;
                int k = ks[ki];
                int kept = 0;
                for (int f = 0; f < S; f++) {
                    int greater = 0, equal_before = 0;
                    for (int g = 0; g < S; g++) {
                        greater += in[g] > in[f];
                        equal_before += g < f && in[g] == in[f];
                    }
                    int sel = greater + equal_before < k;
                    float want = sl_topk_value(in[f], sel);
                    kept += sel;
                    if (out[f] != want && bad++ < 3)
                        fprintf(stderr, "topk k %d shape %d row %d feature %d: %g want %g\n", k, shape, r, f, out[f], want);
                }
                CHECK(kept == (k < S ? k : S));
            }
            CHECK(bad == 0);
        }
    }
    CHECK(short_rows > 0 && short_rows < csr_rows); /* some rows keep fewer than k (values <= 0) */
    free(a);
    free(b);
    free(col);
    free(val);
    free(cnt);
    printf("top-k with ties: k in {1, 7, 64, 2999, 3000} of 3000 match the CPU rule; k_topk_csr gives the same "
           "entries on %d rows (%d with fewer than k positive)\n",
           csr_rows, short_rows);
}

/* ---- 3. model forward --------------------------------------------------------- */

typedef struct dev_model_host {
    sl_dev_model m;
    sl_dev_layer *layers;
    sl_model_layer_view *views;
} dev_model_host;

static dev_model_host dev_model_of(const sl_model *model) {
    dev_model_host h;
    const sl_model_config *c = sl_model_config_of(model);
    h.views = (sl_model_layer_view *)malloc((size_t)c->n_layer * sizeof *h.views);
    h.layers = (sl_dev_layer *)malloc((size_t)c->n_layer * sizeof *h.layers);
    sl_model_view v;
    sl_err err;
    if (sl_model_get_view(model, &v, h.views, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    for (int l = 0; l < c->n_layer; l++) {
        const sl_model_layer_view *L = &v.layers[l];
        sl_dev_layer d = {L->ln1_w, L->ln1_b, L->attn_w,  L->attn_b, L->attn_proj_w, L->attn_proj_b,
                          L->ln2_w, L->ln2_b, L->fc_w,    L->fc_b,   L->mlp_proj_w,  L->mlp_proj_b};
        h.layers[l] = d;
    }
    h.m.C = c->d_model;
    h.m.NH = c->n_head;
    h.m.F = c->d_mlp;
    h.m.eps = c->layer_norm_eps;
    h.m.gelu_erf = v.gelu_erf;
    h.m.scale_attn_weights = v.scale_attn_weights;
    h.m.scale_attn_by_inverse_layer_idx = v.scale_attn_by_inverse_layer_idx;
    h.m.wte = v.wte;
    h.m.wpe = v.wpe;
    h.m.layers = h.layers;
    return h;
}

static sl_dev_model_ws alloc_ws(const sl_dev_model *m, int B, int T, float **block) {
    size_t N = (size_t)B * T, NC = N * m->C;
    size_t wide = (size_t)(3 * m->C > m->F ? 3 * m->C : m->F);
    *block = (float *)calloc(sl_dev_model_ws_floats(m->C, m->NH, m->F, (size_t)B, (size_t)T), sizeof(float));
    sl_dev_model_ws w;
    w.ids = (int32_t *)malloc(N * sizeof(int32_t));
    w.x = *block;
    w.buf = w.x + NC;
    w.y = w.buf + NC;
    w.big = w.y + NC;
    w.q = w.big + N * wide;
    w.k = w.q + NC;
    w.v = w.k + NC;
    w.att = w.v + NC;
    return w;
}

static void check_model(const char *dir) {
    sl_err err = {{0}};
    sl_model *model = sl_model_load(dir, &err);
    CHECK(model != NULL);
    if (!model) return (void)fprintf(stderr, "%s\n", err.msg);
    int B = 0, T = 0;
    int32_t *tok = read_tokens(dir, &B, &T);
    CHECK(tok != NULL);
    const sl_model_config *c = sl_model_config_of(model);
    dev_model_host h = dev_model_of(model);
    float *block;
    sl_dev_model_ws w = alloc_ws(&h.m, B, T, &block);
    const size_t NC = (size_t)B * T * c->d_model;
    float *cpu = (float *)malloc(NC * sizeof(float));
    double worst = 0;
    for (int l = 0; l < c->n_layer; l++) {
        for (int kind = 0; kind < 4; kind++) {
            sl_hook hook = {l, (sl_hook_kind)kind};
            float *ws = (float *)malloc(sl_model_workspace_floats(model, B, T, hook) * sizeof(float));
            CHECK(sl_model_forward(model, tok, B, T, hook, cpu, ws, &err) == 0);
            free(ws);
            { /* block shapes (32, 32, 3) and (64, 128, 2) in turn: a fiber per thread is slow */
                int shape = (l + kind) % 2;
                sl_pipe p = make_pipe(shape);
                memcpy(w.ids, tok, (size_t)B * T * sizeof(int32_t));
                float *out = NULL;
                CHECK(sl_forward(&p, &h.m, &w, B, T, hook, &out) == 0);
                double md = 0;
                for (size_t i = 0; i < NC; i++) {
                    double d = fabs((double)out[i] - cpu[i]) / (1.0 + fabs(cpu[i]));
                    if (d > md) md = d;
                }
                CHECK(md <= 1e-5);
                if (md > 1e-5) fprintf(stderr, "%s blocks.%d kind %d shape %d: differs by %g\n", dir, l, kind, shape, md);
                if (md > worst) worst = md;
            }
        }
    }
    printf("model %s: %d layers x 4 hooks, %d x %d tokens: max relative |kernels - cpu| %.2g\n", dir, c->n_layer, B, T,
           worst);
    free(cpu);
    free(block);
    free(w.ids);
    free(h.layers);
    free(h.views);
    free(tok);
    sl_model_free(model);
}

/* ---- 4. whole batches against the CPU backend ------------------------------------ */

/* The CUDA backend's run(), with host pointers: forward, centring, compaction,
 * SAE on the included rows, CSR with empty rows for the others. */
static int emu_run(const sl_dev_model *m, const sl_sae *sae, sl_hook hook, int center, const sl_batch_in *in,
                   sl_csr_builder *out, int shape) {
    sl_pipe p = make_pipe(shape);
    const int D = sae->d_in, S = sae->d_sae;
    const size_t rows = (size_t)in->n_seq * in->seq_len;
    float *block = NULL, *act;
    sl_dev_model_ws w;
    float *xcopy = NULL;
    if (in->ids) {
        w = alloc_ws(m, (int)in->n_seq, (int)in->seq_len, &block);
        memcpy(w.ids, in->ids, rows * sizeof(int32_t));
        if (sl_forward(&p, m, &w, (int)in->n_seq, (int)in->seq_len, hook, &act)) return -1;
    } else {
        xcopy = (float *)malloc(rows * D * sizeof(float));
        memcpy(xcopy, in->x, rows * D * sizeof(float));
        act = xcopy;
    }
    int32_t *idx = (int32_t *)malloc(rows * sizeof(int32_t));
    size_t n = 0;
    for (size_t r = 0; r < rows; r++)
        if (in->include[r]) idx[n++] = (int32_t)r;
    float *xc = (float *)malloc((n ? n : 1) * D * sizeof(float)), *xin = (float *)malloc((n ? n : 1) * D * sizeof(float));
    float *acts = (float *)malloc((n ? n : 1) * S * sizeof(float)), *mag = (float *)malloc((n ? n : 1) * S * sizeof(float));
    sl_dev_sae ds = dev_sae_of(sae);
    int rc = sl_prepare_rows(&p, act, (int)rows, D, center, idx, n, xc);
    if (rc == 0 && n) rc = sl_sae_encode_rows(&p, &ds, xc, (int)n, xin, acts, mag, 1);
    sl_err err = {{0}};
    size_t j = 0;
    for (size_t r = 0; rc == 0 && r < rows; r++)
        rc = in->include[r] ? sl_csr_append_dense(out, acts + (j++) * S, 1, (uint32_t)S, &err) : sl_csr_append_empty(out, &err);
    free(idx);
    free(xc);
    free(xin);
    free(acts);
    free(mag);
    free(xcopy);
    if (in->ids) {
        free(block);
        free(w.ids);
    }
    return rc;
}

static void check_batches(const char *model_dir) {
    sl_err err = {{0}};
    sl_model *model = sl_model_load(model_dir, &err);
    CHECK(model != NULL);
    if (!model) return;
    int B = 0, T = 0;
    int32_t *tok = read_tokens(model_dir, &B, &T);
    const int D = sl_model_config_of(model)->d_model, S = 96;
    dev_model_host h = dev_model_of(model);
    const size_t rows = (size_t)B * T;
    uint8_t *include = (uint8_t *)malloc(rows);
    for (size_t r = 0; r < rows; r++) include[r] = r % 7 != 0 && r % 11 != 3; /* some rows excluded */
    sl_arch archs[] = {SL_ARCH_STANDARD, SL_ARCH_TOPK, SL_ARCH_JUMPRELU, SL_ARCH_GATED};
    const char *hooks[] = {"blocks.0.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.2.hook_mlp_out",
                           "blocks.2.hook_resid_post"};
    float *acts_in = (float *)malloc(rows * D * sizeof(float));
    for (size_t i = 0; i < rows * D; i++) acts_in[i] = frand() * 2;
    int runs = 0;
    parity_stats total = {0, 0, 0, 0, 0, 0.0};
    for (int ai = 0; ai < 4; ai++) {
        sl_sae *sae = random_sae(D, S, archs[ai], ai == 3 ? SL_NORM_LAYER_NORM : ai == 1 ? SL_NORM_CONSTANT_NORM_RESCALE : SL_NORM_NONE);
        for (int hi = 0; hi < 5; hi++) { /* two of the 4 hooks (each hook twice in all), stored activations */
            if (hi < 4 && hi != ai % 4 && hi != (ai + 2) % 4) continue;
            for (int center = 0; center < 2; center++) {
                sl_hook hook = {0, SL_HOOK_RESID_PRE};
                if (hi < 4) CHECK(sl_hook_parse(hooks[hi], &hook, &err) == 0);
                sl_backend_setup setup;
                memset(&setup, 0, sizeof setup);
                setup.sae = sae;
                setup.model = hi < 4 ? model : NULL;
                setup.hook = hook;
                setup.center = center;
                setup.max_seqs = (uint32_t)B;
                setup.seq_len = (uint32_t)T;
                sl_backend *cpu = sl_backend_cpu_new(&setup, &err);
                CHECK(cpu != NULL);
                sl_batch_in in = {(uint32_t)B, (uint32_t)T, hi < 4 ? NULL : acts_in, hi < 4 ? tok : NULL, include, NULL};
                sl_csr_builder a, b;
                memset(&a, 0, sizeof a);
                memset(&b, 0, sizeof b);
                CHECK(sl_csr_reset(&a, (uint32_t)rows, &err) == 0 && sl_csr_reset(&b, (uint32_t)rows, &err) == 0);
                CHECK(cpu->ops->run(cpu, &in, &a, &err) == 0);
                CHECK(emu_run(&h.m, sae, hook, center, &in, &b, runs % 2) == 0);
                char label[128];
                snprintf(label, sizeof label, "%s %s center %d", sl_arch_name(sae->arch), hi < 4 ? hooks[hi] : "stored", center);
                parity_stats st;
                CHECK(parity_compare(&a, &b, sae->threshold, sae->arch == SL_ARCH_TOPK, &st, label) == 0);
                CHECK(st.nnz_a > 0);
                for (size_t r = 0; r < rows; r++)
                    if (!include[r]) CHECK(b.row_ptr[r + 1] == b.row_ptr[r]);
                total.nnz_a += st.nnz_a;
                total.matched += st.matched;
                total.near_threshold += st.near_threshold;
                if (st.max_abs_diff > total.max_abs_diff) total.max_abs_diff = st.max_abs_diff;
                sl_csr_free(&a);
                sl_csr_free(&b);
                cpu->ops->free(cpu);
                runs++;
            }
        }
        sl_sae_free(sae);
    }
    printf("batches: %d runs (4 architectures x (2 hooks + stored activations) x centring), %llu nonzeros, %llu "
           "matched, %llu near a threshold, max |cpu - kernels| %.2g\n",
           runs, (unsigned long long)total.nnz_a, (unsigned long long)total.matched,
           (unsigned long long)total.near_threshold, total.max_abs_diff);
    free(acts_in);
    free(include);
    free(h.layers);
    free(h.views);
    free(tok);
    sl_model_free(model);
}

/* ---- 5. the chunked, double-buffered batch (sl_encode_batch) ------------------- */

static void alloc_slot(sl_chunk_slot *c, size_t K, size_t width) {
    memset(c, 0, sizeof *c);
    c->d_off = (int32_t *)calloc(K + 1, sizeof(int32_t));
    c->d_col = (int32_t *)calloc(K * width, sizeof(int32_t));
    c->d_val = (float *)calloc(K * width, sizeof(float));
    c->d_sums = (double *)calloc(2 * K, sizeof(double));
    c->h_off = (int32_t *)calloc(K + 1, sizeof(int32_t));
    c->h_sums = (double *)calloc(2 * K, sizeof(double));
}
static void free_slot(sl_chunk_slot *c) {
    free(c->d_off), free(c->d_col), free(c->d_val), free(c->d_sums);
    free(c->h_off), free(c->h_col), free(c->h_val), free(c->h_sums);
}

/* The CUDA backend's run() as it is now: forward (model runs), centring and
 * compaction, then sl_encode_batch in chunks of K rows. */
static int emu_run_chunked(const sl_dev_model *m, const sl_sae *sae, sl_hook hook, int center, const sl_batch_in *in,
                           size_t K, sl_csr_builder *out, sl_recon_sums *recon, int shape) {
    sl_pipe p = make_pipe(shape);
    const int D = sae->d_in, S = sae->d_sae;
    const size_t rows = (size_t)in->n_seq * in->seq_len;
    sl_dev_sae ds = dev_sae_of(sae);
    const size_t width = sl_topk_direct(&ds) ? (size_t)sl_topk_width(&ds) : (size_t)S;
    sl_batch_bufs bb;
    memset(&bb, 0, sizeof bb);
    bb.chunk_rows = K;
    bb.d_xc = (float *)calloc(rows * D, sizeof(float));
    bb.h_xc = in->ids ? NULL : (float *)calloc(rows * D, sizeof(float));
    bb.d_xin = (float *)calloc(K * D, sizeof(float));
    bb.d_dense = (float *)calloc(K * S, sizeof(float));
    bb.d_mag = (float *)calloc(K * S, sizeof(float));
    bb.d_x_sum = (double *)calloc(D, sizeof(double));
    bb.h_x_sum = (double *)calloc(D, sizeof(double));
    alloc_slot(&bb.slot[0], K, width);
    alloc_slot(&bb.slot[1], K, width);
    size_t n_inc = 0;
    for (size_t r = 0; r < rows; r++) n_inc += in->include[r] != 0;
    int rc = 0;
    float *block = NULL;
    sl_dev_model_ws w;
    memset(&w, 0, sizeof w);
    if (in->ids) { /* the includer's part for model runs: forward, centre, gather into d_xc */
        w = alloc_ws(m, (int)in->n_seq, (int)in->seq_len, &block);
        memcpy(w.ids, in->ids, rows * sizeof(int32_t));
        float *act = NULL;
        int32_t *idx = (int32_t *)malloc(rows * sizeof(int32_t));
        size_t n = 0;
        for (size_t r = 0; r < rows; r++)
            if (in->include[r]) idx[n++] = (int32_t)r;
        rc = sl_forward(&p, m, &w, (int)in->n_seq, (int)in->seq_len, hook, &act);
        if (rc == 0) rc = sl_prepare_rows(&p, act, (int)rows, D, center, idx, n, bb.d_xc);
        free(idx);
    }
    sl_err err = {{0}};
    if (rc == 0)
        rc = sl_encode_batch(&p, &ds, &bb, in->ids ? NULL : in->x, in->include, rows, n_inc, center, out, recon, &err);
    if (rc) fprintf(stderr, "sl_encode_batch: %s\n", err.msg);
    for (int st = 0; st < SL_N_STREAMS; st++) { /* nothing left behind */
        CHECK(g_streams.done[st] == g_streams.queue[st].size());
        g_streams.queue[st].clear();
        g_streams.done[st] = 0;
    }
    free_slot(&bb.slot[0]);
    free_slot(&bb.slot[1]);
    free(bb.d_xc), free(bb.h_xc), free(bb.d_xin), free(bb.d_dense), free(bb.d_mag), free(bb.d_x_sum), free(bb.h_x_sum);
    free(block);
    free(w.ids);
    return rc;
}

static int same_csr(const sl_csr_builder *a, const sl_csr_builder *b) {
    if (a->n_rows != b->n_rows) return 0;
    for (uint32_t r = 0; r <= a->n_rows; r++)
        if (a->row_ptr[r] != b->row_ptr[r]) return 0;
    uint64_t nnz = a->row_ptr[a->n_rows];
    return (nnz == 0 || (memcmp(a->col, b->col, nnz * sizeof(uint32_t)) == 0 &&
                         memcmp(a->val, b->val, nnz * sizeof(float)) == 0));
}

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-30 ? fabs(b) : 1e-30); }

/* Against (a) the unchunked emulated pipeline (emu_run: dense activations, then a
 * dense -> CSR on the host): the very same CSR, bit for bit, whatever the chunk
 * size, so top-k straight to CSR equals the DenseToSparse path; (b) the CPU
 * backend: its CSR under the parity rule and its reconstruction sums. */
static void check_chunked(const char *model_dir) {
    sl_err err = {{0}};
    sl_model *model = sl_model_load(model_dir, &err);
    CHECK(model != NULL);
    if (!model) return;
    int B = 0, T = 0;
    int32_t *tok = read_tokens(model_dir, &B, &T);
    const int D = sl_model_config_of(model)->d_model, S = 96;
    dev_model_host h = dev_model_of(model);
    const size_t rows = (size_t)B * T;
    uint8_t *include = (uint8_t *)malloc(rows);
    for (size_t r = 0; r < rows; r++) include[r] = r % 5 != 1 && r % 13 != 0 && r != rows - 1; /* ends excluded */
    float *acts_in = (float *)malloc(rows * D * sizeof(float));
    for (size_t i = 0; i < rows * D; i++) acts_in[i] = frand() * 2;
    sl_arch archs[] = {SL_ARCH_STANDARD, SL_ARCH_TOPK, SL_ARCH_JUMPRELU, SL_ARCH_GATED};
    size_t chunks[] = {1, 7, 4096};
    int runs = 0, identical = 0;
    double worst_err = 0, worst_x = 0, worst_xsum = 0;
    unsigned long long copies0 = g_streams.copies;
    g_gemm_by_column = 1;
    for (int ai = 0; ai < 4; ai++) {
        sl_sae *sae = random_sae(D, S, archs[ai], ai == 1 ? SL_NORM_CONSTANT_NORM_RESCALE : SL_NORM_NONE);
        if (ai == 1) sae->k = 9;
        for (int stored = 0; stored < 2; stored++) {
            for (int center = 0; center < 2; center++) {
                sl_hook hook = {0, SL_HOOK_RESID_PRE};
                CHECK(sl_hook_parse("blocks.1.hook_resid_post", &hook, &err) == 0);
                sl_backend_setup setup;
                memset(&setup, 0, sizeof setup);
                setup.sae = sae;
                setup.model = stored ? NULL : model;
                setup.hook = hook;
                setup.center = center;
                setup.max_seqs = (uint32_t)B;
                setup.seq_len = (uint32_t)T;
                sl_backend *cpu = sl_backend_cpu_new(&setup, &err);
                CHECK(cpu != NULL);
                sl_recon_sums qc = {0, 0, 0, (double *)calloc(D, sizeof(double))};
                sl_batch_in in = {(uint32_t)B, (uint32_t)T, stored ? acts_in : NULL, stored ? NULL : tok, include, &qc};
                sl_csr_builder a, b;
                memset(&a, 0, sizeof a);
                memset(&b, 0, sizeof b);
                CHECK(sl_csr_reset(&a, (uint32_t)rows, &err) == 0 && sl_csr_reset(&b, (uint32_t)rows, &err) == 0);
                CHECK(cpu->ops->run(cpu, &in, &a, &err) == 0);
                CHECK(emu_run(&h.m, sae, hook, center, &in, &b, runs % 2) == 0);
                for (size_t ci = 0; ci < 3; ci++) {
                    sl_csr_builder c;
                    memset(&c, 0, sizeof c);
                    CHECK(sl_csr_reset(&c, (uint32_t)rows, &err) == 0);
                    sl_recon_sums qg = {0, 0, 0, (double *)calloc(D, sizeof(double))};
                    CHECK(emu_run_chunked(&h.m, sae, hook, center, &in, chunks[ci], &c, &qg, runs % 2) == 0);
                    int same = same_csr(&b, &c);
                    if (!same)
                        fprintf(stderr, "%s stored %d center %d chunk %zu: CSR differs from the unchunked pipeline\n",
                                sl_arch_name(sae->arch), stored, center, chunks[ci]);
                    CHECK(same);
                    identical += same;
                    char label[128];
                    snprintf(label, sizeof label, "chunked %s stored %d center %d", sl_arch_name(sae->arch), stored,
                             center);
                    parity_stats st;
                    CHECK(parity_compare(&a, &c, sae->threshold, sae->arch == SL_ARCH_TOPK, &st, label) == 0);
                    /* reconstruction: the same rows, sums to float rounding */
                    CHECK(qg.rows == qc.rows && qc.rows > 0);
                    double re = rel(qg.err_sq, qc.err_sq), rx = rel(qg.x_sq, qc.x_sq), rs = 0;
                    for (int d = 0; d < D; d++) {
                        double e = fabs(qg.x_sum[d] - qc.x_sum[d]) / (1.0 + fabs(qc.x_sum[d]));
                        if (e > rs) rs = e;
                    }
                    /* stored input: the same x to the bit; model runs: the forward's 2e-6 */
                    const double tx = stored ? 1e-9 : 1e-5;
                    CHECK(re < 1e-5 && rx < tx && rs < tx);
                    if (re >= 1e-5 || rx >= tx || rs >= tx)
                        fprintf(stderr, "%s: recon err_sq %.12g vs %.12g, x_sq %.12g vs %.12g, x_sum %.3g\n", label,
                                qg.err_sq, qc.err_sq, qg.x_sq, qc.x_sq, rs);
                    worst_err = re > worst_err ? re : worst_err;
                    worst_x = rx > worst_x ? rx : worst_x;
                    worst_xsum = rs > worst_xsum ? rs : worst_xsum;
                    free(qg.x_sum);
                    sl_csr_free(&c);
                    runs++;
                }
                free(qc.x_sum);
                sl_csr_free(&a);
                sl_csr_free(&b);
                cpu->ops->free(cpu);
            }
        }
        sl_sae_free(sae);
    }
    g_gemm_by_column = 0;
    CHECK(runs == 48 && identical == runs);
    CHECK(g_streams.deferred_max >= 3); /* copies really were left pending across chunks */
    printf("chunked batches: %d runs (4 architectures x model/stored x centring x chunks of 1, 7, all rows): %d "
           "CSRs identical to the unchunked pipeline (top-k straight to CSR included); %llu async copies, up to "
           "%llu pending; reconstruction vs CPU: err_sq %.2g, x_sq %.2g, x_sum %.2g (relative)\n",
           runs, identical, g_streams.copies - copies0, g_streams.deferred_max, worst_err, worst_x, worst_xsum);
    free(acts_in);
    free(include);
    free(h.layers);
    free(h.views);
    free(tok);
    sl_model_free(model);
}

int main(int argc, char **argv) {
    if (argc < 2) return fprintf(stderr, "usage: %s FIXTURES\n", argv[0]), 2;
    const char *src = getenv("SAELITE_SOURCE_DIR");
    char tiny[4200], tiny16[4200];
    snprintf(tiny, sizeof tiny, "%s/tests/data/gpt2_tiny", src ? src : ".");
    snprintf(tiny16, sizeof tiny16, "%s/tests/data/gpt2_tiny_f16", src ? src : ".");
    check_order_keys();
    check_sae_cases(argv[1]);
    check_topk_ties();
    check_model(tiny);
    check_model(tiny16);
    check_batches(tiny);
    check_chunked(tiny);
    printf("emulator: %llu launches, %llu barriers\n", sl_emu().launches, sl_emu().barriers);
    CHECK_DONE();
}
