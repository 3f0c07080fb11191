/* model_hooks: dumps a model's activations at hooks, or a tokenizer's ids, as raw
 * little-endian files, for tests that compare them with a reference computed elsewhere
 * (tests/sql/test_smollm2.py against transformers).
 *
 *   model_hooks forward MODEL_DIR TOKENS_FILE OUT_DIR HOOK...
 *       TOKENS_FILE: raw int32 ids of one sequence. For each hook (e.g.
 *       blocks.14.hook_resid_post) runs sl_model_forward up to it and writes
 *       OUT_DIR/HOOK.f32: float32 rows [n_tokens, sl_model_hook_width].
 *   model_hooks encode TOKENIZER_JSON TEXT_FILE OUT_FILE
 *       OUT_FILE: raw int32 ids of sl_tokenizer_encode on the file's bytes (no BOS).
 *
 * Prints one line per hook (its width and the seconds it took) on stdout; errors go
 * to stderr with exit status 1. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The whole file, NUL-terminated; *len its size. NULL with a message on failure. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    char *buf = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0) buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    return buf;
}

static int write_file(const char *path, const void *data, size_t bytes) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, bytes, f) != bytes || fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

static int cmd_encode(const char *tok_path, const char *text_path, const char *out_path) {
    sl_err err = {{0}};
    size_t len = 0;
    char *text = read_file(text_path, &len);
    if (!text) return 1;
    sl_tokenizer *tok = sl_tokenizer_load(tok_path, &err);
    sl_encoding e = {0};
    int rc = 1;
    double t0 = now();
    if (!tok || sl_tokenizer_encode(tok, text, len, &e, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
    } else if (write_file(out_path, e.ids, e.n * sizeof(int32_t)) == 0) {
        printf("encode %zu bytes -> %zu ids %.3f s\n", len, e.n, now() - t0);
        rc = 0;
    }
    sl_encoding_free(&e);
    sl_tokenizer_free(tok);
    free(text);
    return rc;
}

static int cmd_forward(const char *model_dir, const char *tokens_path, const char *out_dir, int n_hooks,
                       char **hooks) {
    sl_err err = {{0}};
    size_t bytes = 0;
    char *raw = read_file(tokens_path, &bytes);
    if (!raw) return 1;
    if (bytes == 0 || bytes % sizeof(int32_t) != 0) {
        fprintf(stderr, "%s: %zu bytes is not a non-empty list of int32 ids\n", tokens_path, bytes);
        free(raw);
        return 1;
    }
    int n = (int)(bytes / sizeof(int32_t));
    int32_t *tokens = malloc(bytes);
    memcpy(tokens, raw, bytes);
    free(raw);

    double t0 = now();
    sl_model *m = sl_model_load(model_dir, &err);
    if (!m) {
        fprintf(stderr, "%s\n", err.msg);
        free(tokens);
        return 1;
    }
    printf("load %s %.3f s\n", model_dir, now() - t0);
    int rc = 0;
    for (int i = 0; i < n_hooks && rc == 0; i++) {
        sl_hook hook;
        if (sl_hook_parse(hooks[i], &hook, &err) != 0 || sl_model_check_hook(m, hook, &err) != 0) {
            fprintf(stderr, "%s\n", err.msg);
            rc = 1;
            break;
        }
        int width = sl_model_hook_width(m, hook);
        size_t wsn = sl_model_workspace_floats(m, 1, n, hook);
        float *ws = malloc((wsn ? wsn : 1) * sizeof(float));
        float *out = malloc((size_t)n * (size_t)width * sizeof(float));
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.f32", out_dir, hooks[i]);
        t0 = now();
        if (!ws || !out || sl_model_forward(m, tokens, 1, n, hook, out, ws, &err) != 0) {
            fprintf(stderr, "%s\n", ws && out ? err.msg : "out of memory");
            rc = 1;
        } else if (write_file(path, out, (size_t)n * (size_t)width * sizeof(float)) != 0) {
            rc = 1;
        } else {
            printf("forward %s %d x %d %.3f s\n", hooks[i], n, width, now() - t0);
        }
        free(ws);
        free(out);
    }
    sl_model_free(m);
    free(tokens);
    return rc;
}

int main(int argc, char **argv) {
    if (argc >= 6 && strcmp(argv[1], "forward") == 0) return cmd_forward(argv[2], argv[3], argv[4], argc - 5, argv + 5);
    if (argc == 5 && strcmp(argv[1], "encode") == 0) return cmd_encode(argv[2], argv[3], argv[4]);
    fprintf(stderr,
            "usage: %s forward MODEL_DIR TOKENS_FILE OUT_DIR HOOK...\n"
            "       %s encode TOKENIZER_JSON TEXT_FILE OUT_FILE\n",
            argv[0], argv[0]);
    return 2;
}
