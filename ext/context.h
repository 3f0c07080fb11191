/* context.h: what one database connection shares between saelite's virtual
 * tables and functions.
 *
 * One sl_ctx per connection, made when the extension loads and handed to every
 * module and function as its client data (each registration holds a reference;
 * the last one dropped frees it). It holds:
 *   - the catalog (catalog.h): finished extractions opened for browsing, each
 *     results.slr mapped once however many tables read it;
 *   - the tokenizers, loaded once per file (identity: device, inode, size,
 *     mtime) and shared by the catalog and the models;
 *   - the models: an extraction's model, SAE and tokenizer loaded for
 *     encode_text and feature_logits (engine/probe.h).
 * Everything that reads an extraction's row in `extractions` goes through
 * sl_extraction_lookup, which also resolves its paths (paths survive a change
 * of directory; see docs/SQL.md, "Paths"). */
#ifndef SAELITE_CONTEXT_H
#define SAELITE_CONTEXT_H

#include <sqlite3ext.h>
#include <stdint.h>

#include "probe.h"
#include "tokenizer.h"

typedef struct sl_catalog sl_catalog;
typedef struct sl_model_cache sl_model_cache;
typedef struct sl_token_cache sl_token_cache;

typedef struct sl_ctx {
    int refs;
    sl_catalog *catalog;
    sl_token_cache *tokenizers;
    sl_model_cache *models;
} sl_ctx;

sl_ctx *sl_ctx_new(void);
sl_ctx *sl_ctx_ref(sl_ctx *ctx);
/* Drops one reference (void * for SQLite's destructors). */
void sl_ctx_unref(void *ctx);

/* Sets the virtual table's error to the formatted message (%z frees its
 * argument, as sqlite3_mprintf) and returns SQLITE_ERROR, or SQLITE_NOMEM when
 * the message cannot be made. */
int sl_vtab_error(sqlite3_vtab *vtab, const char *fmt, ...);

/* ---- extractions -------------------------------------------------------- */

/* One row of `extractions`, as the readers need it. Paths are the ones to open
 * (resolved: see sl_extraction_lookup); the strings live until
 * sl_extraction_row_free. */
typedef struct sl_extraction_row {
    int64_t id;
    char *status;
    char *store, *tokenizer, *sae, *model, *hook; /* NULL when the row has none */
    char *options;                                /* the options JSON */
    char *paths;                                  /* the paths JSON, NULL before `paths` */
    int64_t seq_len;
} sl_extraction_row;

/* Reads extraction `id` (has_id), else the most recent one whose status is
 * 'done'. Paths come from the row's `paths` column (absolute, the store
 * relative to the database file's directory when it lies there) when it has
 * one, else from the columns as given (databases from before `paths`). fn names
 * the caller in messages. 0, or -1 with *msg (sqlite3_malloc'd). */
int sl_extraction_lookup(sqlite3 *db, int has_id, int64_t id, const char *fn, sl_extraction_row *row, char **msg);
void sl_extraction_row_free(sl_extraction_row *row);

/* The message for a failed read of the extractions table by fn: "no extractions
 * table" only when that is the cause, otherwise SQLite's reason. */
char *sl_extractions_error(sqlite3 *db, const char *fn);

/* An input path as a run records it in `paths`: absolute (the real path when
 * it exists, else joined to the working directory). sqlite3_malloc'd; NULL on
 * OOM. */
char *sl_absolute_path(const char *path);
/* The store as `paths` records it: relative to the directory of the database
 * file when the store lies in it or below, absolute otherwise. */
char *sl_store_record(sqlite3 *db, const char *abs_store);
/* A recorded store path made openable: a relative one is joined to the
 * database file's directory. sqlite3_malloc'd. */
char *sl_store_resolve(sqlite3 *db, const char *recorded);

/* ---- tokenizers --------------------------------------------------------- */

/* The tokenizer at path, loaded on first use and shared; a changed file is
 * loaded again. Release with sl_tokenizer_release. NULL with *err set. */
const sl_tokenizer *sl_tokenizer_acquire(sl_ctx *ctx, const char *path, sl_err *err);
void sl_tokenizer_release(sl_ctx *ctx, const sl_tokenizer *tok);

/* ---- models ------------------------------------------------------------- */

/* An extraction's loaded model, SAE and tokenizer. */
typedef struct sl_cached_model {
    int64_t id;     /* extraction */
    uint64_t files; /* XXH64 of the identities of its files */
    sl_probe *probe;
    const sl_tokenizer *tok; /* shared (sl_tokenizer_acquire); may be NULL */
    int refs;                /* -1: not kept in the cache, freed on release */
} sl_cached_model;

/* Extraction `id` (has_id), else the latest 'done' one, loaded (two are kept,
 * keyed by id and file identities, so a rewritten file is reloaded). fn names
 * the caller in messages (*msg, sqlite3_malloc'd). */
sl_cached_model *sl_model_acquire(sl_ctx *ctx, sqlite3 *db, int has_id, int64_t id, const char *fn, char **msg);
void sl_model_release(sl_ctx *ctx, sl_cached_model *m);

#endif
