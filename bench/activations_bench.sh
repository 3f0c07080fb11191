#!/usr/bin/env bash
# Latency of `activations` lookups on a finished extraction (not a test).
#
#   bench/activations_bench.sh DB [--ext build/saelite] [--repeat 50] [--id N]
#
# In one sqlite3 shell (so the extraction's files stay mapped: warm), runs each
# query --repeat times and prints the time of one run (mean over the repeats,
# the shell's start-up subtracted; for a list of queries the median of those) of:
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

# Wall time (ms) of one warm run of a query: a shell running it REPEAT times,
# minus a shell running SELECT 1 as often, divided by REPEAT (the shell's
# .timer only has millisecond resolution).
shell_ms() {
    local t0 t1
    t0=$(date +%s%N)
    { echo ".load $EXT"; echo ".output /dev/null"; for _ in $(seq "$REPEAT"); do echo "$1"; done; } |
        "$SQLITE3" "$DB" >/dev/null
    t1=$(date +%s%N)
    echo $(( t1 - t0 ))
}
median_ms() {
    local a b
    a=$(shell_ms "$1")
    b=$(shell_ms "SELECT 1;")
    awk -v a="$a" -v b="$b" -v n="$REPEAT" 'BEGIN {v = (a - b) / n / 1e6; printf "%.3f\n", v < 0 ? 0 : v}'
}
median_of() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

NNZ="$(q "SELECT nnz FROM extractions WHERE id = $ID;")"
SEQS="$(q "SELECT sequences_done FROM extractions WHERE id = $ID;")"
D_SAE="$(q "SELECT d_sae FROM extractions WHERE id = $ID;")"
echo "extraction $ID: $NNZ nonzeros, $SEQS sequences, $D_SAE features; $REPEAT warm runs each"

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
