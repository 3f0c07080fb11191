#!/usr/bin/env bash
# The benchmark suite (not a test): runs every measurement in one go and rewrites
# docs/BENCHMARKS.md (and docs/benchmarks_scaling.png) with this machine, the date and
# the figures of this run.
#
#   bench/bench.sh [--quick] [--keep] [--build-dir build-bench] [--no-build]
#                  [--peer-python PATH] [--no-peer] [--out docs/BENCHMARKS.md]
#
#   --quick        small sizes, about 5 minutes on 2 cores (the document says so)
#   --keep         keep the working directory (inputs, stores, databases, perf data)
#   --build-dir    where saelite is built (RelWithDebInfo; configured if needed)
#   --peer-python  a Python with torch, transformers, sae-lens, tokenizers and numpy
#                  (default: $PEER_PYTHON). It also generates the model (numpy) and
#                  draws the plot (matplotlib). Without it the peer is skipped with a
#                  line saying why, and the model path needs python3 with numpy.
#   --no-peer      skip the Python peer pipeline
#
# Everything is written under ${TMPDIR:-/tmp}/saelite-bench.XXXXXX (removed at the end
# unless --keep). The full suite needs about 6 GiB there at its peak.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=()
KEEP=0
BUILD_DIR=build-bench
NO_BUILD=()
NO_PEER=()
PEER="${PEER_PYTHON:-}"
OUT="$ROOT/docs/BENCHMARKS.md"

usage() {
    awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=(--quick); shift ;;
    --keep) KEEP=1; shift ;;
    --build-dir) BUILD_DIR="${2:?}"; shift 2 ;;
    --no-build) NO_BUILD=(--no-build); shift ;;
    --peer-python) PEER="${2:?}"; shift 2 ;;
    --no-peer) NO_PEER=(--no-peer); shift ;;
    --out) OUT="${2:?}"; shift 2 ;;
    -h | --help) usage ;;
    *) echo "bench.sh: unknown argument '$1'" >&2; usage ;;
    esac
done
case "$BUILD_DIR" in /*) BUILD="$BUILD_DIR" ;; *) BUILD="$ROOT/$BUILD_DIR" ;; esac
for tool in python3 cmake cc pkg-config "${SQLITE3:-sqlite3}"; do
    command -v "$tool" >/dev/null || { echo "bench.sh: $tool not found" >&2; exit 1; }
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/saelite-bench.XXXXXX")"
cleanup() {
    if [ "$KEEP" -eq 1 ]; then
        echo "[bench] kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

PEER_ARGS=()
[ -n "$PEER" ] && PEER_ARGS=(--peer-python "$PEER")
python3 "$ROOT/bench/lib/suite.py" --work "$WORK" --build-dir "$BUILD" \
    ${QUICK[@]+"${QUICK[@]}"} ${NO_BUILD[@]+"${NO_BUILD[@]}"} ${NO_PEER[@]+"${NO_PEER[@]}"} \
    ${PEER_ARGS[@]+"${PEER_ARGS[@]}"}
python3 "$ROOT/bench/lib/report.py" "$WORK/results.json" --out "$OUT"
echo "[bench] wrote $OUT" >&2
