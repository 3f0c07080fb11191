#!/usr/bin/env bash
# Benchmark of the encode+store path (not a test): tokens/s, bytes per nonzero and
# the ratio of tokens/s to the GEMM-bound limit measured in the same run.
#
#   bench/run_bench.sh [--tokens 1048576] [--keep] [--dtype f16|f32|bf16]
#                      [--arch standard|topk] [--active 64] [--seed 1234]
#                      [--build-dir build] [--no-build]
#
# Synthetic input: d_in 768, d_sae 24576, seq_len 128, about --active features
# per token (see tools/gen_bench_input.c). Everything goes to a directory under
# ${TMPDIR:-/tmp} named after the parameters; an input generated earlier with the
# same parameters (kept with --keep) is reused. Without --keep the directory is
# removed at the end.
#
# GEMM-bound tokens/s = sgemm FLOP/s / (2 * d_in * d_sae), with the sgemm FLOP/s
# measured by tools/sgemm_flops on the encoder's GEMM shape just before the run.
# Set OPENBLAS_NUM_THREADS to change the BLAS thread count of both.
set -euo pipefail

TOKENS=1048576
KEEP=0
DTYPE=f16
ARCH=standard
ACTIVE=64
SEED=1234
BUILD_DIR=build
DO_BUILD=1
SEQ_LEN=128
D_IN=768
D_SAE=24576

usage() {
    awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
    --tokens) TOKENS="${2:?}"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --dtype) DTYPE="${2:?}"; shift 2 ;;
    --arch) ARCH="${2:?}"; shift 2 ;;
    --active) ACTIVE="${2:?}"; shift 2 ;;
    --seed) SEED="${2:?}"; shift 2 ;;
    --build-dir) BUILD_DIR="${2:?}"; shift 2 ;;
    --no-build) DO_BUILD=0; shift ;;
    -h | --help) usage ;;
    *) echo "run_bench.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
case "$TOKENS" in '' | *[!0-9]*) echo "run_bench.sh: --tokens must be a number" >&2; exit 2 ;; esac
if [ $((TOKENS % SEQ_LEN)) -ne 0 ] || [ "$TOKENS" -eq 0 ]; then
    echo "run_bench.sh: --tokens must be a positive multiple of $SEQ_LEN" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "$BUILD_DIR" in /*) BUILD="$BUILD_DIR" ;; *) BUILD="$ROOT/$BUILD_DIR" ;; esac
SQLITE3="${SQLITE3:-sqlite3}"
command -v "$SQLITE3" >/dev/null || { echo "run_bench.sh: sqlite3 shell not found" >&2; exit 1; }

log() { printf '[bench] %s\n' "$*" >&2; }
now() { date +%s.%N; }

# ---- build ----
if [ "$DO_BUILD" -eq 1 ]; then
    log "building in $BUILD"
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    fi
    cmake --build "$BUILD" -j"$(nproc)" >/dev/null
fi
for f in saelite.so gen_bench_input sgemm_flops; do
    [ -e "$BUILD/$f" ] || { echo "run_bench.sh: $BUILD/$f is missing (build first)" >&2; exit 1; }
done

# ---- input ----
PARAMS="tokens=$TOKENS seq_len=$SEQ_LEN d_in=$D_IN d_sae=$D_SAE active=$ACTIVE dtype=$DTYPE arch=$ARCH seed=$SEED"
WORK="${TMPDIR:-/tmp}/saelite-bench-t${TOKENS}-${DTYPE}-${ARCH}-a${ACTIVE}-s${SEED}"
INPUT="$WORK/input"
cleanup() {
    if [ "$KEEP" -eq 0 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [ -f "$INPUT/params" ] && [ "$(cat "$INPUT/params")" = "$PARAMS" ]; then
    log "reusing input in $INPUT"
else
    rm -rf "$INPUT"
    mkdir -p "$WORK"
    log "generating input in $INPUT ($PARAMS)"
    "$BUILD/gen_bench_input" "$INPUT" --tokens "$TOKENS" --seq-len "$SEQ_LEN" --d-in "$D_IN" \
        --d-sae "$D_SAE" --active "$ACTIVE" --dtype "$DTYPE" --arch "$ARCH" --seed "$SEED" >&2
    printf '%s' "$PARAMS" >"$INPUT/params"
fi

# Flush the freshly written input (and anything else dirty) so that write-back
# does not compete with the timed run and its fsyncs.
sync

# ---- machine ----
NCPU="$(nproc)"
LOAD="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo '?')"
log "$NCPU CPUs, load average $LOAD"
busy_warning() {
    # Other processes using CPU make every figure below pessimistic.
    local others
    others="$(ps -eo pcpu=,pid=,comm= --sort=-pcpu 2>/dev/null | awk -v me=$$ '$1 >= 20 && $2 != me' | head -5)"
    if [ -n "$others" ]; then
        log "WARNING: other processes are using CPU; figures will be low:"
        printf '%s\n' "$others" | sed 's/^/[bench]   /' >&2
        BUSY=1
    fi
}
BUSY=0
busy_warning

# ---- sgemm roofline ----
CHUNK=$(((16 << 20) / D_SAE))
[ "$CHUNK" -lt 1 ] && CHUNK=1
[ "$CHUNK" -gt 1024 ] && CHUNK=1024
log "measuring sgemm M=$CHUNK K=$D_IN N=$D_SAE"
SGEMM_OUT="$("$BUILD/sgemm_flops" --m "$CHUNK" --k "$D_IN" --n "$D_SAE" --seconds 3)"
printf '%s\n' "$SGEMM_OUT" | sed 's/^/[bench]   /' >&2
SGEMM_GFLOPS="$(printf '%s\n' "$SGEMM_OUT" | awk '$1 == "sgemm_gflops" {print $2}')"
SGEMM_THREADS="$(printf '%s\n' "$SGEMM_OUT" | awk '$1 == "sgemm_threads" {print $2}')"

# ---- extraction ----
DB="$WORK/bench.db"
STORE="$WORK/store"
rm -rf "$DB" "$DB-journal" "$DB-wal" "$STORE"
TIMEV=""
if [ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1; then
    TIMEV="$WORK/time-v.txt"
fi
SQL="SELECT extract_features('sae', '$INPUT/sae', 'activations', '$INPUT/acts.safetensors', 'store', '$STORE', 'progress', 'off');"
log "extracting $TOKENS tokens through the sqlite3 shell"
T0="$(now)"
if [ -n "$TIMEV" ]; then
    /usr/bin/time -v -o "$TIMEV" "$SQLITE3" "$DB" ".load $BUILD/saelite" "$SQL" >/dev/null
else
    "$SQLITE3" "$DB" ".load $BUILD/saelite" "$SQL" >/dev/null
fi
T1="$(now)"

IFS='|' read -r STATUS TOKENS_DONE NNZ STORE_BYTES ERROR < <("$SQLITE3" "$DB" \
    "SELECT status, tokens_done, nnz, store_bytes, coalesce(error, '') FROM extractions ORDER BY id DESC LIMIT 1;")
if [ "$STATUS" != "done" ]; then
    echo "run_bench.sh: extraction status '$STATUS': $ERROR" >&2
    exit 1
fi
STORE_DIR_BYTES="$(du -sb "$STORE" | cut -f1)"
RESULTS_BYTES="$(stat -c %s "$STORE/results.slr" 2>/dev/null || echo 0)"
N_SEGMENTS="$(find "$STORE" -name 'seg-*' | wc -l)"

PEAK_RSS_KB="" CPU_USER="" CPU_SYS=""
if [ -n "$TIMEV" ]; then
    PEAK_RSS_KB="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TIMEV")"
    CPU_USER="$(awk -F': ' '/User time/ {print $2}' "$TIMEV")"
    CPU_SYS="$(awk -F': ' '/System time/ {print $2}' "$TIMEV")"
fi

# ---- queries ----
log "timing queries"
Q1="SELECT feature_id, frequency FROM features ORDER BY frequency DESC LIMIT 10;"
Q2="SELECT rank, activation, sequence_id, position, context FROM top_examples WHERE feature_id = 123 AND kind = 'top';"
Q3="SELECT feature_id, mean, std FROM feature_stats WHERE feature_id = 123;"
# The shell prints "Run Time: real R user U sys S" only for statements read from
# its input (not for command-line arguments). Each query runs twice in a fresh
# shell: the first includes opening the extraction's results, the second is warm.
# Prints "FIRST REPEAT" (seconds, the shell's millisecond resolution).
query_time() {
    printf '.load %s\n.timer on\n%s\n%s\n' "$BUILD/saelite" "$1" "$1" | "$SQLITE3" "$DB" 2>&1 |
        awk '/^Run Time:/ {t[n++] = $4} END {print t[0], t[1]}'
}
QT1="$(query_time "$Q1")"
QT2="$(query_time "$Q2")"
QT3="$(query_time "$Q3")"
Q1_TOP="$("$SQLITE3" "$DB" ".load $BUILD/saelite" "SELECT feature_id || ':' || printf('%.5f', frequency) FROM features ORDER BY frequency DESC LIMIT 3;" | paste -sd' ')"
Q2_ROWS="$("$SQLITE3" "$DB" ".load $BUILD/saelite" "SELECT count(*) FROM top_examples WHERE feature_id = 123 AND kind = 'top';")"

# ---- report ----
awk -v tokens="$TOKENS_DONE" -v d_in="$D_IN" -v d_sae="$D_SAE" -v nnz="$NNZ" \
    -v store_bytes="$STORE_BYTES" -v dir_bytes="$STORE_DIR_BYTES" -v results_bytes="$RESULTS_BYTES" \
    -v nseg="$N_SEGMENTS" -v t0="$T0" -v t1="$T1" -v gflops="$SGEMM_GFLOPS" -v threads="$SGEMM_THREADS" \
    -v chunk="$CHUNK" -v ncpu="$NCPU" -v rss="$PEAK_RSS_KB" -v cpu_user="$CPU_USER" -v cpu_sys="$CPU_SYS" \
    -v qt1="$QT1" -v qt2="$QT2" -v qt3="$QT3" -v q1top="$Q1_TOP" -v q2rows="$Q2_ROWS" -v busy="$BUSY" \
    -v dtype="$DTYPE" -v arch="$ARCH" -v load="$LOAD" '
BEGIN {
    wall = t1 - t0
    tps = tokens / wall
    flop_per_token = 2 * d_in * d_sae
    bound = gflops * 1e9 / flop_per_token
    printf "saelite encode+store benchmark\n"
    printf "  input              %d tokens, d_in %d, d_sae %d, %s arch, %s activations\n", tokens, d_in, d_sae, arch, dtype
    printf "  machine            %d CPUs, load average %s before the run%s\n", ncpu, load, busy ? " (OTHER PROCESSES BUSY: figures pessimistic)" : ""
    printf "  mean active/token  %.2f\n", nnz / tokens
    printf "  nonzeros           %d\n", nnz
    printf "  wall               %.2f s (sqlite3 shell: SAE load + encode + store + results)\n", wall
    if (cpu_user != "")
        printf "  cpu                %.2f s user + %.2f s sys = %.2f cores busy on average\n", cpu_user, cpu_sys, (cpu_user + cpu_sys) / wall
    printf "  tokens/s           %.1f\n", tps
    printf "  store bytes        %d in %d segment files (extractions.store_bytes)\n", store_bytes, nseg
    printf "  bytes/nonzero      %.3f\n", store_bytes / nnz
    printf "  bytes/token        %.2f\n", store_bytes / tokens
    printf "  store dir total    %d bytes (incl. results.slr %d bytes)\n", dir_bytes, results_bytes
    if (rss != "")
        printf "  peak RSS           %.1f MiB\n", rss / 1024
    printf "  sgemm              %.2f GFLOP/s (M=%d K=%d N=%d, %s BLAS threads)\n", gflops, chunk, d_in, d_sae, threads
    printf "  GEMM-bound         %.1f tokens/s (sgemm FLOP/s / (2*d_in*d_sae) = / %.1f MFLOP)\n", bound, flop_per_token / 1e6
    printf "  ratio              %.3f (tokens/s / GEMM-bound tokens/s)\n", tps / bound
    printf "  GEMM-only estimate %.2f s for %d tokens (%.2f s of the wall is not GEMM)\n", tokens / bound, tokens, wall - tokens / bound
    printf "  queries (sqlite3 .timer real seconds: first in a fresh shell / repeated)\n"
    split(qt1, a, " "); split(qt2, b, " "); split(qt3, c, " ")
    printf "    features ORDER BY frequency DESC LIMIT 10   %s / %s s  (top: %s)\n", a[1], a[2], q1top
    printf "    top_examples WHERE feature_id = 123          %s / %s s  (%d rows)\n", b[1], b[2], q2rows
    printf "    feature_stats WHERE feature_id = 123         %s / %s s\n", c[1], c[2]
}'
if [ "$KEEP" -eq 1 ]; then log "kept $WORK"; fi
