/* dataset.c: text sources, tokenization into the token file, pre-tokenized inputs. */
#include "dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype.h"
#include "fsutil.h"
#include "safetensors.h"
#include "text.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int sl_dataset_is_token_file(const char *path) {
    return ends_with(path, ".npy") || ends_with(path, ".safetensors") || ends_with(path, ".bin");
}

/* ---- text sources ---- */

int sl_text_source_open(sl_text_source *s, const char *path, const char *kind, const char *text_mode,
                        const char *field, sl_err *err) {
    memset(s, 0, sizeof *s);
    s->jsonl = kind ? strcmp(kind, "jsonl") == 0 : (ends_with(path, ".jsonl") || ends_with(path, ".json"));
    s->whole_file = text_mode && strcmp(text_mode, "file") == 0;
    if (s->jsonl && s->whole_file) return sl_errf_path(err, path, "text_mode 'file' applies to .txt datasets only");
    s->path = strdup(path);
    s->field = strdup(field ? field : "text");
    s->file = fopen(path, "rb");
    if (!s->file) {
        int e = errno;
        sl_text_source_close(s);
        return sl_errf_path(err, path, "cannot open dataset: %s", strerror(e));
    }
    struct stat sb;
    if (fstat(fileno(s->file), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        sl_text_source_close(s);
        return sl_errf_path(err, path, "is a directory, expected a dataset file");
    }
    return 0;
}

void sl_text_source_close(sl_text_source *s) {
    if (s->file) fclose(s->file);
    json_decref(s->json);
    free(s->line);
    free(s->path);
    free(s->field);
    memset(s, 0, sizeof *s);
}

int sl_text_source_next(void *ctx, const char **text, size_t *len, uint64_t *doc, sl_err *err) {
    sl_text_source *s = ctx;
    if (s->whole_file) {
        if (s->line_no++) return 0;
        sl_buf all = {0};
        char chunk[65536];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, s->file)) > 0) sl_buf_append(&all, chunk, n);
        if (ferror(s->file) || all.oom) {
            sl_buf_free(&all);
            return sl_errf_path(err, s->path, "cannot read: %s", all.oom ? "out of memory" : strerror(errno));
        }
        free(s->line);
        s->line = all.data;
        *text = all.data ? all.data : "";
        *len = all.len;
        *doc = 0;
        return all.len ? 1 : 0;
    }
    for (;;) {
        ssize_t n = getline(&s->line, &s->line_cap, s->file);
        if (n < 0) {
            if (ferror(s->file)) return sl_errf_path(err, s->path, "cannot read: %s", strerror(errno));
            return 0;
        }
        uint64_t line_no = s->line_no++;
        if (n > 0 && s->line[n - 1] == '\n') s->line[--n] = 0;
        if (n > 0 && s->line[n - 1] == '\r') s->line[--n] = 0;
        if (!s->jsonl) {
            if (n == 0) { /* empty lines are not documents */
                s->skipped++;
                continue;
            }
            *text = s->line;
            *len = (size_t)n;
            *doc = line_no;
            return 1;
        }
        if (n == 0) {
            s->skipped++;
            continue;
        }
        json_error_t jerr;
        json_decref(s->json);
        /* JSON_ALLOW_NUL: a "\u0000" in the text is a character like any other; the
         * text goes on by its length (json_string_length), NUL bytes and all */
        s->json = json_loadb(s->line, (size_t)n, JSON_ALLOW_NUL, &jerr);
        if (!s->json)
            return sl_errf_path(err, s->path, "line %llu: invalid JSON: %s", (unsigned long long)line_no + 1, jerr.text);
        json_t *v = json_object_get(s->json, s->field);
        if (!json_is_string(v) || json_string_length(v) == 0) {
            s->skipped++;
            continue;
        }
        *text = json_string_value(v);
        *len = json_string_length(v);
        *doc = line_no;
        return 1;
    }
}

/* ---- tokenization ---- */

/* Byte offsets -> character offsets within one document (offsets ascending).
 * A token may start or end inside a multi-byte character (BPE split it): its
 * span then covers that whole character. */
typedef struct char_counter {
    const unsigned char *text;
    size_t len, byte;
    uint32_t chars; /* characters starting before `byte` */
} char_counter;

static uint32_t chars_before(char_counter *c, size_t byte) {
    if (byte < c->byte) { /* not monotone: recount */
        c->byte = 0;
        c->chars = 0;
    }
    for (; c->byte < byte; c->byte++) c->chars += (c->text[c->byte] & 0xC0) != 0x80;
    return c->chars;
}

static int inside_char(const char_counter *c, size_t byte) {
    return byte < c->len && (c->text[byte] & 0xC0) == 0x80;
}

static uint32_t char_start_of(char_counter *c, size_t byte) {
    uint32_t n = chars_before(c, byte);
    return inside_char(c, byte) && n ? n - 1 : n;
}

int sl_dataset_tokenize(const sl_tokenizer *tok, sl_doc_next_fn next, void *src, sl_tokfile_writer *w,
                        sl_dataset_counts *counts, sl_tokenize_progress_fn progress, void *pctx, sl_err *err) {
    sl_encoding enc = {0};
    uint32_t *cs = NULL, *ce = NULL;
    uint8_t *special = NULL;
    size_t cap = 0;
    int rc = -1;
    const char *text;
    size_t len;
    uint64_t doc;
    int got;
    while (!w->full && (got = next(src, &text, &len, &doc, err)) == 1) {
        enc.n = 0;
        if (sl_tokenizer_encode(tok, text, len, &enc, err)) goto done;
        if (enc.n > cap) {
            cap = enc.n * 2;
            uint32_t *a = realloc(cs, cap * sizeof *a), *b = a ? realloc(ce, cap * sizeof *b) : NULL;
            if (a) cs = a;
            if (b) ce = b;
            uint8_t *c = b ? realloc(special, cap) : NULL;
            if (c) special = c;
            if (!a || !b || !c) {
                sl_errf(err, "out of memory tokenizing document %llu", (unsigned long long)doc);
                goto done;
            }
        }
        char_counter cc = {.text = (const unsigned char *)text, .len = len};
        for (size_t i = 0; i < enc.n; i++) {
            cs[i] = char_start_of(&cc, enc.start[i]);
            ce[i] = chars_before(&cc, enc.end[i]); /* counts a character the end falls inside */
            special[i] = (uint8_t)sl_tokenizer_is_special(tok, enc.ids[i]);
        }
        if (sl_tokfile_add_doc(w, doc, enc.ids, cs, ce, special, enc.n, err)) goto done;
        counts->docs++;
        if (progress && counts->docs % 1024 == 0 && progress(pctx, counts->docs, w->n_tokens)) {
            sl_errf(err, "interrupted");
            goto done;
        }
    }
    if (!w->full && got < 0) goto done;
    rc = 0;
done:
    sl_encoding_free(&enc);
    free(cs);
    free(ce);
    free(special);
    return rc;
}

/* ---- pre-tokenized files ---- */

typedef struct token_array {
    const unsigned char *data;
    sl_dtype dtype;
    uint64_t rows, cols; /* cols == 0: 1-D of `rows` ids */
    void *map;
    size_t map_size;
    sl_st *st;
} token_array;

static void token_array_close(token_array *a) {
    if (a->map) munmap(a->map, a->map_size);
    sl_st_close(a->st);
    memset(a, 0, sizeof *a);
}

/* .npy: magic, version, header length, a Python dict literal with descr,
 * fortran_order and shape. Only the few forms numpy writes for integer arrays. */
static int parse_npy(const char *path, token_array *a, sl_err *err) {
    const unsigned char *p = a->map;
    size_t size = a->map_size;
    if (size < 10 || memcmp(p, "\x93NUMPY", 6) != 0) return sl_errf_path(err, path, "not a .npy file (bad magic)");
    size_t hlen, hstart;
    if (p[6] == 1) hlen = (size_t)p[8] | ((size_t)p[9] << 8), hstart = 10;
    else if (p[6] == 2 || p[6] == 3) {
        if (size < 12) return sl_errf_path(err, path, "truncated .npy header");
        hlen = (size_t)p[8] | ((size_t)p[9] << 8) | ((size_t)p[10] << 16) | ((size_t)p[11] << 24);
        hstart = 12;
    } else
        return sl_errf_path(err, path, "unsupported .npy version %d", p[6]);
    if (hlen > size - hstart || hlen > 65536) return sl_errf_path(err, path, "truncated .npy header");
    char hdr[65537];
    memcpy(hdr, p + hstart, hlen);
    hdr[hlen] = 0;
    const char *d = strstr(hdr, "'descr':");
    const char *fo = strstr(hdr, "'fortran_order':");
    const char *sh = strstr(hdr, "'shape':");
    if (!d || !fo || !sh) return sl_errf_path(err, path, ".npy header lacks descr, fortran_order or shape");
    char descr[16] = "";
    if (sscanf(d + 8, " '%15[^']'", descr) != 1) return sl_errf_path(err, path, "bad .npy descr");
    static const struct { const char *descr; sl_dtype dt; } kinds[] = {
        {"<i4", SL_DT_I32}, {"<i8", SL_DT_I64}, {"<u2", SL_DT_U16}, {"<u4", SL_DT_U32}, {"|u1", SL_DT_U8}, {"<i2", SL_DT_I16}};
    a->dtype = SL_DT_INVALID;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(descr, kinds[i].descr) == 0) a->dtype = kinds[i].dt;
    if (a->dtype == SL_DT_INVALID)
        return sl_errf_path(err, path, ".npy dtype '%s' is not a little-endian integer type (use int32, int64, uint16 or uint32)", descr);
    if (strncmp(fo + 16, " False", 6) != 0) return sl_errf_path(err, path, ".npy arrays in Fortran order are not supported");
    unsigned long long r = 0, c = 0;
    int dims = sscanf(sh + 8, " (%llu, %llu)", &r, &c);
    if (dims < 1) return sl_errf_path(err, path, "bad .npy shape");
    if (dims == 1) { /* "(n,)" */
        c = 0;
        if (strstr(sh, ",)") == NULL && strstr(sh, ", )") == NULL) return sl_errf_path(err, path, "bad .npy shape");
    }
    a->rows = r;
    a->cols = c;
    uint64_t n = c ? r * c : r;
    size_t esize = sl_dtype_size(a->dtype);
    if ((c && r > UINT64_MAX / c) || n > (size - hstart - hlen) / esize)
        return sl_errf_path(err, path, "truncated .npy data (%llu ids announced)", (unsigned long long)n);
    a->data = p + hstart + hlen;
    return 0;
}

static int token_array_open(token_array *a, const char *path, const char *token_dtype, sl_err *err) {
    memset(a, 0, sizeof *a);
    if (ends_with(path, ".safetensors")) {
        if (!(a->st = sl_st_open(path, err))) return -1;
        const sl_tensor *t = sl_st_get(a->st, "tokens");
        if (!t && sl_st_count(a->st) == 1) t = sl_st_at(a->st, 0);
        if (!t) return sl_errf_path(err, path, "missing tensor 'tokens'");
        if (t->dtype == SL_DT_F32 || t->dtype == SL_DT_F16 || t->dtype == SL_DT_BF16 || t->dtype == SL_DT_F64 || t->dtype == SL_DT_BOOL)
            return sl_errf_path(err, path, "tensor '%s' has dtype %s; token ids must be integers", t->name, sl_dtype_name(t->dtype));
        if (t->ndim != 1 && t->ndim != 2) return sl_errf_path(err, path, "tensor '%s' must be 1-D or 2-D", t->name);
        a->data = t->data;
        a->dtype = t->dtype;
        a->rows = (uint64_t)t->shape[0];
        a->cols = t->ndim == 2 ? (uint64_t)t->shape[1] : 0;
        return 0;
    }
    if (sl_map_readonly(path, "dataset", &a->map, &a->map_size, err)) return -1;
    if (ends_with(path, ".npy")) return parse_npy(path, a, err);
    a->dtype = !token_dtype || strcmp(token_dtype, "uint16") == 0 ? SL_DT_U16
               : strcmp(token_dtype, "uint32") == 0              ? SL_DT_U32
                                                                  : SL_DT_INVALID;
    if (a->dtype == SL_DT_INVALID) return sl_errf(err, "token_dtype must be 'uint16' or 'uint32'");
    size_t esize = sl_dtype_size(a->dtype);
    if (a->map_size % esize)
        return sl_errf_path(err, path, "size %zu is not a multiple of %zu bytes (%s ids)", a->map_size, esize, sl_dtype_name(a->dtype));
    a->data = a->map;
    a->rows = a->map_size / esize;
    return 0;
}

int64_t sl_dataset_tokens_row_len(const char *path, sl_err *err) {
    token_array a;
    if (token_array_open(&a, path, NULL, err)) {
        token_array_close(&a);
        return -1;
    }
    int64_t cols = (int64_t)a.cols;
    token_array_close(&a);
    return cols;
}

int sl_dataset_tokens_file(const char *path, const char *token_dtype, int32_t vocab_size, const sl_tokenizer *tok,
                           int32_t special_id, sl_tokfile_writer *w, sl_err *err) {
    token_array a;
    enum { CHUNK = 8192 };
    int64_t buf[CHUNK];
    int32_t ids[CHUNK];
    uint32_t zeros[CHUNK] = {0};
    uint8_t special[CHUNK];
    int rc = -1;
    if (token_array_open(&a, path, token_dtype, err)) goto done;
    uint64_t n_docs = a.cols ? a.rows : 1, doc_len = a.cols ? a.cols : a.rows;
    if (n_docs == 0 || doc_len == 0) {
        sl_errf_path(err, path, "empty dataset");
        goto done;
    }
    size_t esize = sl_dtype_size(a.dtype);
    for (uint64_t d = 0; d < n_docs && !w->full; d++) {
        for (uint64_t i = 0; i < doc_len && !w->full; i += CHUNK) {
            size_t m = (size_t)(doc_len - i < CHUNK ? doc_len - i : CHUNK);
            sl_convert_to_i64(a.data + (d * doc_len + i) * esize, a.dtype, m, buf);
            for (size_t j = 0; j < m; j++) {
                if (buf[j] < 0 || buf[j] >= vocab_size) {
                    sl_errf_path(err, path, "token id %lld at index %llu is out of range (vocabulary of %d)",
                                 (long long)buf[j], (unsigned long long)(d * doc_len + i + j), (int)vocab_size);
                    goto done;
                }
                ids[j] = (int32_t)buf[j];
                special[j] = tok ? (uint8_t)sl_tokenizer_is_special(tok, ids[j]) : (uint8_t)(ids[j] == special_id);
            }
            /* A 1-D stream is one document; each row of a 2-D array is one. */
            if ((i == 0 ? sl_tokfile_add_doc : sl_tokfile_add_more)(w, d, ids, zeros, zeros, special, m, err))
                goto done;
        }
    }
    rc = 0;
done:
    token_array_close(&a);
    return rc;
}
