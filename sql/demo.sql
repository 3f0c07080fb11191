-- demo.sql: extract the features of the bundled tiny model and SAE on this
-- repository's own text, then browse them. Run from the repository root after
-- `python3 tools/demo/make_demo_dataset.py build/demo/dataset.jsonl`
-- (scripts/demo.sh does both): sqlite3 build/demo.db < sql/demo.sql
.load build/saelite
.bail on

.print '== extract_features: tokenize, run the model to blocks.2.hook_resid_pre, encode with the SAE'
SELECT extract_features('sae', 'examples/tiny/sae', 'model', 'examples/tiny/model',
                        'tokenizer', 'examples/tiny/tokenizer.json',
                        'dataset', 'build/demo/dataset.jsonl',
                        'name', 'tiny', 'progress', 'on') AS extraction_id;

.mode box
.print '== the run'
SELECT id, name, status, device, tokens_done, sequences_done, d_sae, nnz,
       round(1.0 * store_bytes / nnz, 2) AS bytes_per_nonzero
FROM extractions ORDER BY id DESC LIMIT 1;

.print '== the most frequent features (max token in « »)'
SELECT feature_id, round(frequency, 4) AS frequency, round(max_activation, 2) AS max_act,
       top_token, substr(replace(example, char(10), '⏎'), 1, 60) AS example
FROM features ORDER BY frequency DESC LIMIT 10;

.print '== features whose top 10 examples all fire on one token'
WITH t AS (SELECT feature_id, count(DISTINCT trim(token)) AS tokens FROM top_examples
           WHERE kind = 'top' AND rank <= 10 GROUP BY feature_id)
SELECT feature_id, round(frequency, 4) AS frequency, top_token
FROM features JOIN t USING (feature_id)
WHERE tokens = 1 AND trim(top_token) IN ('def', 'if', '(', '{', '==', '->', '0', '1', '#', 'return')
ORDER BY frequency DESC LIMIT 10;

.print '== three features in context: "(" after a Python call, "(" after a C macro, small numbers in prose'
.print '   (highlight(): every active token shaded by activation / max; «token:activation» off a terminal)'
.mode list
.separator ' | '
SELECT feature_id, rank, round(activation, 2) AS activation,
       replace(highlight(tokens, activations, coalesce(@highlight, 'text')), char(10), '⏎') AS window
FROM top_examples WHERE feature_id IN (1459, 1211, 35) AND kind = 'top' AND rank <= 4;
.mode box

.print '== dead features (never active) and the densest ones'
SELECT count(*) AS dead_features, (SELECT count(*) FROM features) AS features FROM features WHERE is_dead;
SELECT s.feature_id, round(s.frequency, 4) AS frequency, round(s.mean, 3) AS mean, round(s.std, 3) AS std,
       f.top_token
FROM feature_stats s JOIN features f USING (feature_id) ORDER BY s.frequency DESC LIMIT 5;

.print '== your own text: which of the three fire on it (encode_text runs the model and SAE on it)'
SELECT position, token, feature_id, round(activation, 2) AS activation
FROM encode_text('if x == 1:' || char(10) || '    print(len(items), 3)')
WHERE feature_id IN (1459, 1211, 35) ORDER BY position, feature_id;

.print '== the features that fire on "(" across the dataset, and the tokens feature 1459 promotes (logit lens)'
SELECT feature_id, n_on_token, occurrences, round(fraction_of_occurrences, 3) AS of_occurrences,
       round(fraction_of_feature, 3) AS of_feature
FROM token_features('(') ORDER BY n_on_token DESC LIMIT 5;
SELECT rank, token, round(logit, 3) AS logit FROM feature_logits WHERE feature_id = 1459 AND k = 5;

.print '== top examples whose window contains "#include"'
SELECT feature_id, count(*) AS examples FROM search_examples('#include')
GROUP BY feature_id ORDER BY examples DESC LIMIT 5;

