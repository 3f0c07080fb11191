#include "act_input.h"

#include <stdlib.h>
#include <string.h>

int sl_act_input_open(sl_act_input *in, const char *path, sl_err *err) {
    memset(in, 0, sizeof *in);
    if (!(in->st = sl_st_open(path, err))) return -1;
    in->acts = sl_st_get(in->st, "activations");
    in->tokens = sl_st_get(in->st, "tokens");
    if (!in->acts || !in->tokens) {
        sl_errf_path(err, path, "missing tensor '%s' (an activations file holds 'activations' "
                                "[n_seq, seq_len, d_in] and 'tokens' [n_seq, seq_len])",
                     in->acts ? "tokens" : "activations");
        goto fail;
    }
    const sl_tensor *a = in->acts, *t = in->tokens;
    if (a->dtype != SL_DT_F32 && a->dtype != SL_DT_F16 && a->dtype != SL_DT_BF16) {
        sl_errf_path(err, path, "tensor 'activations' has dtype %s; expected F32, F16 or BF16",
                     sl_dtype_name(a->dtype));
        goto fail;
    }
    if (t->dtype != SL_DT_I32 && t->dtype != SL_DT_I64) {
        sl_errf_path(err, path, "tensor 'tokens' has dtype %s; expected I32 or I64", sl_dtype_name(t->dtype));
        goto fail;
    }
    char sa[128], stt[128];
    sl_shape_str(a, sa, sizeof sa);
    sl_shape_str(t, stt, sizeof stt);
    if (a->ndim != 3 || t->ndim != 2 || a->shape[0] != t->shape[0] || a->shape[1] != t->shape[1]) {
        sl_errf_path(err, path,
                     "shapes disagree: activations %s must be [n_seq, seq_len, d_in] and tokens %s [n_seq, seq_len]",
                     sa, stt);
        goto fail;
    }
    if (a->shape[0] == 0 || a->shape[1] == 0) {
        sl_errf_path(err, path, "empty dataset (activations %s)", sa);
        goto fail;
    }
    if (a->shape[1] > (1 << 24) || a->shape[2] < 1 || a->shape[2] > (1 << 24)) {
        sl_errf_path(err, path, "unsupported activations shape %s", sa);
        goto fail;
    }
    in->n_seq = (uint64_t)a->shape[0];
    in->seq_len = (uint32_t)a->shape[1];
    in->d_in = (uint32_t)a->shape[2];
    return 0;
fail:
    sl_act_input_close(in);
    return -1;
}

void sl_act_input_close(sl_act_input *in) {
    sl_st_close(in->st);
    memset(in, 0, sizeof *in);
}

int sl_act_input_token_range(const sl_act_input *in, int64_t *min_id, int64_t *max_id, sl_err *err) {
    enum { CHUNK = 65536 };
    int64_t buf[CHUNK];
    uint64_t n = in->tokens->numel;
    size_t esize = sl_dtype_size(in->tokens->dtype);
    *min_id = INT64_MAX;
    *max_id = INT64_MIN;
    for (uint64_t i = 0; i < n; i += CHUNK) {
        size_t m = (size_t)(n - i < CHUNK ? n - i : CHUNK);
        if (sl_convert_to_i64(in->tokens->data + i * esize, in->tokens->dtype, m, buf))
            return sl_errf_path(err, sl_st_path(in->st), "tokens: unsupported dtype");
        for (size_t j = 0; j < m; j++) {
            if (buf[j] < *min_id) *min_id = buf[j];
            if (buf[j] > *max_id) *max_id = buf[j];
        }
    }
    sl_st_release(in->st, in->tokens->data, in->tokens->nbytes);
    return 0;
}

int sl_act_input_read(sl_act_input *in, uint64_t first, uint32_t n, float *x, int32_t *tokens, sl_err *err) {
    size_t rows = (size_t)n * in->seq_len, row0 = (size_t)first * in->seq_len;
    size_t aes = sl_dtype_size(in->acts->dtype), tes = sl_dtype_size(in->tokens->dtype);
    const unsigned char *asrc = in->acts->data + row0 * in->d_in * aes;
    const unsigned char *tsrc = in->tokens->data + row0 * tes;
    sl_convert_to_f32(asrc, in->acts->dtype, rows * in->d_in, x);
    for (size_t i = 0; i < rows; i++) {
        int64_t id;
        sl_convert_to_i64(tsrc + i * tes, in->tokens->dtype, 1, &id);
        if (id < 0 || id > INT32_MAX)
            return sl_errf_path(err, sl_st_path(in->st), "token id %lld at sequence %llu is out of range",
                                (long long)id, (unsigned long long)(first + i / in->seq_len));
        tokens[i] = (int32_t)id;
    }
    sl_st_release(in->st, asrc, rows * in->d_in * aes);
    sl_st_release(in->st, tsrc, rows * tes);
    return 0;
}
