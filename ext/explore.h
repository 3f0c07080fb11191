/* explore.h: registration of the functions for exploring features beyond the
 * three browsing tables: encode_text (probe.c), feature_logits (logits.c),
 * highlight (highlight.c), token_features and search_examples (search.c). */
#ifndef SAELITE_EXPLORE_H
#define SAELITE_EXPLORE_H

#include <sqlite3ext.h>
#include <stdint.h>

#include "probe.h"

int sl_register_highlight(sqlite3 *db);
int sl_register_search(sqlite3 *db);

/* Registers encode_text and feature_logits, which share a per-connection cache
 * of loaded models and SAEs (probe.c). */
int sl_register_probe(sqlite3 *db);

/* The cache: an extraction's loaded model, SAE and tokenizer, reloaded when
 * one of their files changes. */
typedef struct sl_probe_cache sl_probe_cache;
typedef struct sl_cached_probe {
    int64_t id;     /* extraction */
    uint64_t files; /* XXH64 of the identities (device, inode, size, mtime) of its files */
    sl_probe *probe;
    int refs;       /* -1: not kept in the cache, freed on release */
} sl_cached_probe;

/* Extraction `id` (has_id), else the latest 'done' one. fn names the caller in
 * error messages (*msg, sqlite3_malloc'd). */
sl_cached_probe *sl_probe_cache_acquire(sl_probe_cache *pc, sqlite3 *db, int has_id, int64_t id, const char *fn,
                                        char **msg);
void sl_probe_cache_release(sl_cached_probe *c);

/* Registers feature_logits over the cache; destroy frees the cache with the module. */
int sl_register_logits(sqlite3 *db, sl_probe_cache *cache, void (*destroy)(void *));

#endif
