-- demo.sql: extract the bundled example's features and browse them.
-- Run from the repository root (scripts/demo.sh does): sqlite3 build/demo.db < sql/demo.sql
.load build/saelite
.bail on

.print '== extract_features: every token of the example through the SAE'
SELECT extract_features('sae', 'build/example/sae',
                        'activations', 'build/example/acts.safetensors',
                        'tokenizer', 'build/example/tokenizer.json',
                        'name', 'example', 'progress', 'on') AS extraction_id;

.mode box
.print '== the run'
SELECT id, name, status, tokens_done, d_sae, nnz,
       round(1.0 * store_bytes / nnz, 2) AS bytes_per_nonzero
FROM extractions ORDER BY id DESC LIMIT 1;

.print '== the most frequent features'
SELECT feature_id, round(frequency, 4) AS frequency, round(max_activation, 3) AS max_act,
       top_token, replace(example, char(10), '⏎') AS example
FROM features ORDER BY frequency DESC LIMIT 10;

.print '== three features and their top examples (max token in « »)'
SELECT feature_id, rank, round(activation, 3) AS activation,
       replace(context, char(10), '⏎') AS context
FROM top_examples
WHERE feature_id IN (SELECT feature_id FROM features
                     WHERE top_token IN ('(', ' return', '0') AND NOT is_dead
                     ORDER BY max_activation DESC LIMIT 3)
  AND rank <= 5;

.print '== dead features (never active) and the densest ones'
SELECT count(*) AS dead_features FROM features WHERE is_dead;
SELECT feature_id, round(frequency, 4) AS frequency, round(mean, 3) AS mean, round(std, 3) AS std
FROM feature_stats ORDER BY frequency DESC LIMIT 5;
