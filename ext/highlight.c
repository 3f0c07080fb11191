/* highlight.c: the SQL function highlight(tokens_json, activations_json [, mode]).
 *
 *   SELECT highlight(tokens, activations, 'ansi') FROM top_examples WHERE feature_id = 7;
 *   SELECT highlight('["a"," <b>"]', '[0, 2.5]', 'html');
 *     -> a<span style="background-color:rgba(255,140,0,1.00)" title="2.5"> &lt;b&gt;</span>
 *
 * tokens_json and activations_json are JSON arrays of the same length, as in
 * top_examples.tokens / .activations: token texts (strings; integers are shown
 * as their decimal form) and numbers. The tokens are joined with nothing in
 * between; a token whose activation is > 0 is marked, shaded by
 * activation / max, max being the largest activation of the array:
 *
 *   'text' (default)  «TOKEN:V», V the activation as printf "%.3g"
 *   'html'            TOKEN HTML-escaped (& < > " ' become entities); an active
 *                     one becomes <span style="background-color:rgba(255,140,0,A)"
 *                     title="V">TOKEN</span>, A = activation / max as "%.2f"
 *   'ansi'            ESC[30;48;5;Nm TOKEN ESC[0m with N from the xterm-256
 *                     ramp 229 222 215 208 202, level floor(5 * activation / max)
 *                     clamped to 0..4
 *
 * Inactive tokens (activation <= 0) are copied as they are (escaped in html).
 * A NULL argument gives NULL. Malformed JSON, an element of the wrong type, a
 * non-finite activation, arrays of different lengths or an unknown mode are
 * errors naming the problem. */
#include <jansson.h>
#include <math.h>
#include <sqlite3ext.h>
#include <stdio.h>
#include <string.h>

#include "registry.h"
#include "text.h"

SQLITE_EXTENSION_INIT3

typedef enum { MODE_TEXT, MODE_HTML, MODE_ANSI } hl_mode;

static const int ansi_ramp[5] = {229, 222, 215, 208, 202};

/* Parses a JSON array argument; sets an error on ctx and returns NULL if not one. */
static json_t *array_arg(sqlite3_context *ctx, sqlite3_value *v, const char *what) {
    const char *text = (const char *)sqlite3_value_text(v);
    json_error_t jerr;
    json_t *j = json_loadb(text ? text : "", (size_t)sqlite3_value_bytes(v), JSON_DECODE_ANY, &jerr);
    if (!j) {
        char *m = sqlite3_mprintf("highlight: %s is not valid JSON: %s (line %d, column %d)", what, jerr.text,
                                  jerr.line, jerr.column);
        sqlite3_result_error(ctx, m, -1);
        sqlite3_free(m);
        return NULL;
    }
    if (!json_is_array(j)) {
        char *m = sqlite3_mprintf("highlight: %s must be a JSON array", what);
        sqlite3_result_error(ctx, m, -1);
        sqlite3_free(m);
        json_decref(j);
        return NULL;
    }
    return j;
}

static void put_html_escaped(sl_buf *out, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *rep = s[i] == '&' ? "&amp;" : s[i] == '<' ? "&lt;" : s[i] == '>' ? "&gt;"
                        : s[i] == '"' ? "&quot;" : s[i] == '\'' ? "&#39;" : NULL;
        if (rep) sl_buf_puts(out, rep);
        else sl_buf_append(out, s + i, 1);
    }
}

void sl_highlight_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    for (int i = 0; i < argc; i++)
        if (sqlite3_value_type(argv[i]) == SQLITE_NULL) return; /* NULL in, NULL out */
    hl_mode mode = MODE_TEXT;
    if (argc == 3) {
        const char *m = (const char *)sqlite3_value_text(argv[2]);
        if (m && strcmp(m, "text") == 0) mode = MODE_TEXT;
        else if (m && strcmp(m, "html") == 0) mode = MODE_HTML;
        else if (m && strcmp(m, "ansi") == 0) mode = MODE_ANSI;
        else {
            sqlite3_result_error(ctx, "highlight: mode must be one of 'text', 'html', 'ansi'", -1);
            return;
        }
    }
    json_t *toks = array_arg(ctx, argv[0], "tokens_json"), *acts = toks ? array_arg(ctx, argv[1], "activations_json") : NULL;
    if (!toks || !acts) goto done;
    size_t n = json_array_size(toks);
    if (json_array_size(acts) != n) {
        char *m = sqlite3_mprintf("highlight: tokens_json has %lld elements but activations_json %lld",
                                  (long long)n, (long long)json_array_size(acts));
        sqlite3_result_error(ctx, m, -1);
        sqlite3_free(m);
        goto done;
    }
    double max = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(acts, i), *t = json_array_get(toks, i);
        if (!json_is_number(a) || !isfinite(json_number_value(a))) {
            char *m = sqlite3_mprintf("highlight: activations_json[%lld] is not a finite number", (long long)i);
            sqlite3_result_error(ctx, m, -1);
            sqlite3_free(m);
            goto done;
        }
        if (!json_is_string(t) && !json_is_integer(t)) {
            char *m = sqlite3_mprintf("highlight: tokens_json[%lld] is not a string", (long long)i);
            sqlite3_result_error(ctx, m, -1);
            sqlite3_free(m);
            goto done;
        }
        if (json_number_value(a) > max) max = json_number_value(a);
    }
    sl_buf out = {0};
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(toks, i);
        char num[32], val[32];
        const char *s = num;
        size_t len;
        if (json_is_string(t)) {
            s = json_string_value(t);
            len = json_string_length(t);
        } else {
            len = (size_t)snprintf(num, sizeof num, "%lld", (long long)json_integer_value(t));
        }
        double a = json_number_value(json_array_get(acts, i));
        if (!(a > 0)) {
            if (mode == MODE_HTML) put_html_escaped(&out, s, len);
            else sl_buf_append(&out, s, len);
            continue;
        }
        double frac = a / max;
        snprintf(val, sizeof val, "%.3g", a);
        switch (mode) {
        case MODE_TEXT:
            sl_buf_puts(&out, "«");
            sl_buf_append(&out, s, len);
            sl_buf_puts(&out, ":");
            sl_buf_puts(&out, val);
            sl_buf_puts(&out, "»");
            break;
        case MODE_HTML: {
            char open[160];
            snprintf(open, sizeof open, "<span style=\"background-color:rgba(255,140,0,%.2f)\" title=\"%s\">", frac,
                     val);
            sl_buf_puts(&out, open);
            put_html_escaped(&out, s, len);
            sl_buf_puts(&out, "</span>");
            break;
        }
        case MODE_ANSI: {
            int level = (int)(frac * 5);
            char open[32];
            snprintf(open, sizeof open, "\x1b[30;48;5;%dm", ansi_ramp[level < 0 ? 0 : level > 4 ? 4 : level]);
            sl_buf_puts(&out, open);
            sl_buf_append(&out, s, len);
            sl_buf_puts(&out, "\x1b[0m");
            break;
        }
        }
    }
    if (out.oom) sqlite3_result_error_nomem(ctx);
    else sqlite3_result_text(ctx, sl_buf_str(&out), (int)out.len, SQLITE_TRANSIENT);
    sl_buf_free(&out);
done:
    json_decref(toks);
    json_decref(acts);
}
