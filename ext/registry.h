/* registry.h: every module and SQL function saelite registers, defined in the
 * file named beside it and registered from the tables in saelite.c. Each gets
 * the connection's sl_ctx (context.h) as its client data. */
#ifndef SAELITE_REGISTRY_H
#define SAELITE_REGISTRY_H

#include <sqlite3ext.h>

/* Eponymous virtual tables and table-valued functions. */
extern const sqlite3_module sl_features_module;             /* vtabs.c */
extern const sqlite3_module sl_feature_stats_module;        /* vtabs.c */
extern const sqlite3_module sl_top_examples_module;         /* vtabs.c */
extern const sqlite3_module sl_activations_module;          /* vtab_activations.c */
extern const sqlite3_module sl_feature_histogram_module;    /* vtab_histogram.c */
extern const sqlite3_module sl_density_histogram_module;    /* vtab_histogram.c */
extern const sqlite3_module sl_feature_cooccurrence_module; /* vtab_cooccurrence.c */
extern const sqlite3_module sl_token_features_module;       /* search.c */
extern const sqlite3_module sl_search_examples_module;      /* search.c */
extern const sqlite3_module sl_encode_text_module;          /* probe.c */
extern const sqlite3_module sl_feature_logits_module;       /* logits.c */

/* Scalar functions. */
void sl_extract_features_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv); /* extract_fn.c */
void sl_resume_extraction_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv); /* extract_fn.c */
void sl_check_extraction_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv);  /* extract_fn.c */
void sl_highlight_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv);         /* highlight.c */

#endif
