#!/usr/bin/env bash
# Latency of `activations` lookups on a finished extraction (not a test).
#
#   bench/activations_bench.sh DB [--ext build/saelite] [--repeat 50] [--id N]
#
# In one sqlite3 shell (so the extraction's files stay mapped: warm), runs each
# query --repeat times with .timer on and prints the median wall time of:
#   count(*), sum(activation) WHERE feature_id = f, for 20 features spread over
#     the n_active ranking (the median of their medians), and for the feature
#     with the most postings;
#   SELECT * WHERE sequence_id = s (every nonzero of a sequence), 20 sequences;
#   SELECT * WHERE sequence_id = s AND position = p.
# Uses the extraction --id, else the latest done one.
set -euo pipefail

DB="${1:?usage: activations_bench.sh DB [--ext build/saelite] [--repeat 50] [--id N]}"
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXT="$ROOT/build/saelite"
REPEAT=50
ID=""
while [ $# -gt 0 ]; do
    case "$1" in
    --ext) EXT="${2:?}"; shift 2 ;;
    --repeat) REPEAT="${2:?}"; shift 2 ;;
    --id) ID="${2:?}"; shift 2 ;;
    *) echo "activations_bench.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
SQLITE3="${SQLITE3:-sqlite3}"
q() { "$SQLITE3" "$DB" ".load $EXT" "$1"; }
if [ -z "$ID" ]; then ID="$(q "SELECT max(id) FROM extractions WHERE status = 'done';")"; fi
X="extraction_id = $ID"

# Median wall time (ms) of a query run REPEAT times in one warm shell.
median_ms() {
    { echo ".load $EXT"; echo ".timer on"; echo ".output /dev/null"; for _ in $(seq "$REPEAT"); do echo "$1"; done; } |
        "$SQLITE3" "$DB" 2>&1 | awk '/^Run Time: real/ {print $4 * 1000}' | sort -g |
        awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
median_of() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

NNZ="$(q "SELECT nnz FROM extractions WHERE id = $ID;")"
SEQS="$(q "SELECT sequences_done FROM extractions WHERE id = $ID;")"
D_SAE="$(q "SELECT d_sae FROM extractions WHERE id = $ID;")"
echo "extraction $ID: $NNZ nonzeros, $SEQS sequences, $D_SAE features; median of $REPEAT warm runs"

FEATURES="$(q "SELECT feature_id FROM (SELECT feature_id, row_number() OVER (ORDER BY n_active) AS r
               FROM feature_stats WHERE $X AND n_active > 0) WHERE (r - 1) % (($D_SAE / 20) + 1) = 0 LIMIT 20;")"
BIG="$(q "SELECT feature_id || ' ' || n_active FROM feature_stats WHERE $X ORDER BY n_active DESC LIMIT 1;")"
MID_N="$(q "SELECT n_active FROM feature_stats WHERE $X ORDER BY n_active LIMIT 1 OFFSET $D_SAE / 2;")"

feat="$(for f in $FEATURES; do median_ms "SELECT count(*), sum(activation) FROM activations WHERE $X AND feature_id = $f;"; done | median_of)"
echo "count(*), sum(activation) WHERE feature_id = f: ${feat} ms (20 features; median n_active $MID_N)"
set -- $BIG
big="$(median_ms "SELECT count(*), sum(activation) FROM activations WHERE $X AND feature_id = $1;")"
echo "count(*), sum(activation) WHERE feature_id = $1 (most postings, $2): ${big} ms"
seq_ms="$(for i in $(seq 0 19); do s=$(( (i * 7919) % SEQS )); median_ms "SELECT * FROM activations WHERE $X AND sequence_id = $s;"; done | median_of)"
echo "SELECT * WHERE sequence_id = s (every nonzero of a sequence): ${seq_ms} ms"
pos_ms="$(for i in $(seq 0 19); do s=$(( (i * 7919) % SEQS )); median_ms "SELECT * FROM activations WHERE $X AND sequence_id = $s AND position = $(( i * 5 % 64 ));"; done | median_of)"
echo "SELECT * WHERE sequence_id = s AND position = p: ${pos_ms} ms"
