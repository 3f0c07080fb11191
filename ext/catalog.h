/* catalog.h: the extractions table and the per-connection cache of finished
 * extractions (mapped results file, tokenizer, and on first use the feature
 * index and token file) that the virtual tables read. The catalog is part of
 * the connection's context (context.h): every table shares it. */
#ifndef SAELITE_CATALOG_H
#define SAELITE_CATALOG_H

#include <sqlite3ext.h>
#include <stdint.h>
#include <sys/stat.h>

#include "context.h"
#include "findex.h"
#include "results.h"
#include "tokenizer.h"
#include "tokfile.h"
#include "text.h"

/* Thresholds of features.is_dead (frequency <= dead_threshold) and is_dense
 * (frequency > dense_threshold), per extraction, changed with plain UPDATE.
 * Added to older databases by ALTER TABLE when the extension loads. */
#define SL_DEAD_THRESHOLD_COLUMN "dead_threshold REAL NOT NULL DEFAULT 0 CHECK (dead_threshold BETWEEN 0 AND 1)"
#define SL_DENSE_THRESHOLD_COLUMN "dense_threshold REAL NOT NULL DEFAULT 0.1 CHECK (dense_threshold BETWEEN 0 AND 1)"

/* The paths a run opened, resolved when it started (JSON object: sae, model,
 * tokenizer, dataset, activations absolute; store relative to the database
 * file's directory when it lies there), so the extraction browses from any
 * working directory and moves with its database. The columns sae, model,
 * tokenizer, source and store keep the paths as given. */
#define SL_PATHS_COLUMN "paths TEXT"

#define SL_EXTRACTIONS_DDL                                                                         \
    "CREATE TABLE IF NOT EXISTS main.extractions(\n"                                               \
    "  id INTEGER PRIMARY KEY,\n"                                                                  \
    "  name TEXT, sae TEXT, model TEXT, hook TEXT, source TEXT, tokenizer TEXT, store TEXT,\n"     \
    "  options TEXT,\n"                                                                            \
    "  status TEXT NOT NULL DEFAULT 'queued'\n"                                                    \
    "    CHECK (status IN ('queued','running','done','failed','cancelled')),\n"                    \
    "  device TEXT, d_in INTEGER, d_sae INTEGER, seq_len INTEGER,\n"                               \
    "  sequences_done INTEGER DEFAULT 0, sequences_total INTEGER,\n"                               \
    "  tokens_done INTEGER DEFAULT 0, tokens_total INTEGER,\n"                                     \
    "  nnz INTEGER DEFAULT 0, store_bytes INTEGER DEFAULT 0,\n"                                    \
    "  explained_variance REAL, mse REAL,\n"                                                       \
    "  started_at TEXT, finished_at TEXT, error TEXT,\n"                                            \
    "  " SL_DEAD_THRESHOLD_COLUMN ",\n"                                                              \
    "  " SL_DENSE_THRESHOLD_COLUMN ",\n"                                                             \
    "  " SL_PATHS_COLUMN ")"

/* Names and notes people give features; plain INSERT/UPDATE, read by the
 * `features` table's `label` column. Created with the extractions table. */
#define SL_LABELS_DDL                                                                              \
    "CREATE TABLE IF NOT EXISTS main.feature_labels(\n"                                           \
    "  extraction_id INTEGER NOT NULL REFERENCES extractions(id) ON DELETE CASCADE,\n"           \
    "  feature_id INTEGER NOT NULL,\n"                                                            \
    "  label TEXT, description TEXT, notes TEXT,\n"                                               \
    "  favorite INTEGER NOT NULL DEFAULT 0,\n"                                                    \
    "  PRIMARY KEY (extraction_id, feature_id)) WITHOUT ROWID"

/* Creates extractions and feature_labels when they are missing and adds the
 * columns added since a database was made (ALTER TABLE). SQLITE_OK, or the
 * error with *msg (sqlite3_malloc'd) when the tables cannot be made. */
int sl_extractions_ensure(sqlite3 *db, char **msg);

/* A finished extraction, opened for reading. */
typedef struct sl_open_extraction {
    int64_t id;
    char *store;
    struct stat file; /* the results file mapped, to notice a rebuilt store */
    sl_results res;
    const sl_tokenizer *tok; /* shared (context.h); NULL when the run had no tokenizer: ids shown */
    int refs;
    /* Opened on first use, then kept as long as the entry is cached: */
    sl_findex *index;  /* index.sli: sl_catalog_index */
    sl_tokfile tokens; /* tokens.slt of a model run: sl_catalog_tokens */
    int tokens_state;  /* 0 not tried, 1 open, -1 none (stored activations) */
    /* Every vocabulary token's display text, decoded on first use: the renderers
     * run per row and per window token. A pointer, so copies of the entry (a
     * sampled example's view) share it. */
    struct sl_token_texts *texts;
} sl_open_extraction;

sl_catalog *sl_catalog_new(sl_ctx *ctx);
void sl_catalog_free(sl_catalog *catalog);

/* Opens extraction `id`, or the most recent one with status 'done' when
 * has_id is 0. A tokenizer the extraction records but that cannot be loaded
 * is an error (token texts never silently become ids). On error sets *errmsg
 * (sqlite3_malloc'd, prefixed with fn) and returns NULL. Release with
 * sl_catalog_release. */
sl_open_extraction *sl_catalog_acquire(sl_ctx *ctx, sqlite3 *db, int has_id, int64_t id, const char *fn,
                                       char **errmsg);
void sl_catalog_release(sl_ctx *ctx, sl_open_extraction *x);

/* The extraction's feature index (x->index), opened and validated on the
 * first call. NULL with *errmsg (sqlite3_malloc'd, naming the file) when the
 * store has none (stores written before the index existed) or it is damaged. */
const sl_findex *sl_catalog_index(sl_open_extraction *x, char **errmsg);

/* The store's token file (x->tokens: each row's document and character span),
 * opened on the first call; NULL when the run read stored activations (no
 * tokens.slt). A damaged token file is an error (*errmsg set, NULL returned). */
const sl_tokfile *sl_catalog_tokens(sl_open_extraction *x, char **errmsg);

/* Text of a token: decoded bytes with invalid UTF-8 replaced, or the decimal id. */
void sl_token_text(const sl_open_extraction *x, int32_t token, sl_buf *out);
/* The same text in the extraction's decoded-token table (*len bytes, not
 * NUL-terminated), or NULL when it is not there (call sl_token_text). */
const char *sl_token_text_ref(const sl_open_extraction *x, int32_t token, size_t *len);

/* The window of an example as plain text with the max token wrapped in « ». */
void sl_example_context(const sl_open_extraction *x, const sl_result_example *e, sl_buf *out);

/* JSON arrays of the window's token texts and activations. */
void sl_example_tokens_json(const sl_open_extraction *x, const sl_result_example *e, sl_buf *out);
void sl_example_acts_json(const sl_open_extraction *x, const sl_result_example *e, sl_buf *out);

/* sl_f32_to_display (display of REAL values) is in text.h. */

#endif
