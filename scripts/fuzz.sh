#!/usr/bin/env bash
# Fuzzing: builds the libFuzzer harnesses tests/fuzz/fuzz_*.c with clang (ASan + UBSan) in
# build-fuzz and runs each for FUZZ_RUNS inputs (default 60000, FUZZ_SECONDS at most) on a fresh copy of its seed
# corpus tests/fuzz/corpus/<harness>, with tests/fuzz/<harness>.dict when there is one.
# Fails if any harness crashes, trips a sanitizer or an invariant, leaks, or takes longer
# than FUZZ_TIMEOUT seconds (default 25) on one input; the input is kept in
# build-fuzz/fuzz-run/<harness>/ and the end of the log is printed.
#
# Usage: scripts/fuzz.sh [HARNESS...]     (default: every harness)
#   FUZZ_SECONDS=0   only replays the seed corpora (a quick regression run)
#   FUZZ_SEED=N      libFuzzer's seed (default 1) and FUZZ_RUNS=N runs per harness
#                    (default 60000): the same code explores the same inputs every time
#   FUZZ_JOBS=N      harnesses run at once (default: the number of CPUs)
# Installs clang and its sanitizer/libFuzzer runtime with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
timeout_s=${FUZZ_TIMEOUT:-25}
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
build=build-fuzz
run_dir=$build/fuzz-run

# ---- clang that links -fsanitize=fuzzer ---------------------------------------------------
links_fuzzer() {
  command -v clang >/dev/null 2>&1 || return 1
  local dir rc=0
  dir=$(mktemp -d)
  printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$dir/t.c"
  clang -fsanitize=fuzzer,address,undefined "$dir/t.c" -o "$dir/t" >/dev/null 2>&1 || rc=1
  rm -rf "$dir"
  return $rc
}

if ! links_fuzzer; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "fuzz: installing clang and its libFuzzer/sanitizer runtime"
  $SUDO apt-get update -qq
  # The runtime (libclang_rt.fuzzer*.a, asan, ubsan) is packaged apart from the compiler:
  # libclang-rt-V-dev from LLVM 14 / Debian 12 on (only recommended by clang), before that
  # libclang-common-V-dev (a dependency). V is the version the clang package depends on.
  pkgs=(clang)
  v=$(apt-cache depends clang 2>/dev/null | sed -n 's/.*Depends: clang-\([0-9][0-9]*\)$/\1/p' | head -n 1)
  if [ -n "$v" ] && apt-cache show "libclang-rt-$v-dev" >/dev/null 2>&1; then pkgs+=("libclang-rt-$v-dev"); fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  if ! links_fuzzer; then
    v=$(clang -dumpversion | cut -d. -f1)
    for p in "libclang-rt-$v-dev" "libclang-common-$v-dev"; do
      if apt-cache show "$p" >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null
        links_fuzzer && break
      fi
    done
  fi
  links_fuzzer || { echo "fuzz: clang cannot link -fsanitize=fuzzer" >&2; exit 1; }
fi

# ---- build ------------------------------------------------------------------------------
# A build directory of its own: clang, the engine instrumented for libFuzzer. Nothing CUDA.
# The harnesses build with -Werror (SAELITE_WERROR), the engine without (CMakeLists.txt).
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSAELITE_FUZZ=ON \
  -DSAELITE_WERROR=ON -DCMAKE_CUDA_COMPILER=NOTFOUND >/dev/null
cmake --build "$build" --target fuzz -j"$jobs" >"$build/fuzz-build.log" 2>&1 || {
  tail -n 40 "$build/fuzz-build.log"
  echo "fuzz: build failed (log: $build/fuzz-build.log)" >&2
  exit 1
}

if [ $# -gt 0 ]; then
  harnesses=("$@")
else
  harnesses=()
  for src in tests/fuzz/fuzz_*.c; do harnesses+=("$(basename "$src" .c)"); done
fi

# ---- run --------------------------------------------------------------------------------
rm -rf "$run_dir"
mkdir -p "$run_dir"
export OPENBLAS_NUM_THREADS=1 # one core per harness; they run side by side
# The harnesses rewrite a file per input: on tmpfs when there is one. libFuzzer exits
# without running atexit handlers, so their temporary directories go with this one.
TMPDIR=$(mktemp -d -p /dev/shm saelite-fuzz.XXXXXX 2>/dev/null || mktemp -d)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

run_one() {
  local h=$1 work=$run_dir/$1
  mkdir -p "$work/corpus"
  if [ -d "tests/fuzz/corpus/$h" ]; then cp -r "tests/fuzz/corpus/$h/." "$work/corpus/"; fi
  # A fixed seed (FUZZ_SEED) makes a run repeatable: the same code explores the same inputs.
  local args=(-seed="${FUZZ_SEED:-1}" -timeout="$timeout_s" -rss_limit_mb=2048 -print_final_stats=1
              -artifact_prefix="$work/")
  [ -f "tests/fuzz/$h.dict" ] && args+=(-dict="tests/fuzz/$h.dict")
  if [ "$seconds" -gt 0 ]; then
    # A fixed number of runs with a fixed seed explores the same inputs on every run of
    # the same code, so CI's verdict is repeatable; the time is only an upper bound.
    args+=(-runs="${FUZZ_RUNS:-60000}" -max_total_time="$seconds" "$work/corpus")
  else
    args+=(-runs=0 "$work/corpus")
  fi
  local rc=0
  "$build/$h" "${args[@]}" >"$work/log" 2>&1 || rc=$?
  echo "$rc" >"$work/rc"
}

if [ "$seconds" -gt 0 ]; then
  echo "== fuzzing ${#harnesses[@]} harnesses for ${seconds}s each, $jobs at a time =="
else
  echo "== replaying the seed corpora of ${#harnesses[@]} harnesses =="
fi
for h in "${harnesses[@]}"; do
  [ -x "$build/$h" ] || { echo "fuzz: no harness $h" >&2; exit 1; }
done
running=0
for h in "${harnesses[@]}"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$h" &
  running=$((running + 1))
done
wait

# ---- report -----------------------------------------------------------------------------
stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }
failed=0
for h in "${harnesses[@]}"; do
  log=$run_dir/$h/log
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  printf '%-24s %9s runs %7s/s  cov %5s  ft %6s  corpus %5s  rss %5sMb\n' "$h" \
    "$(stat number_of_executed_units "$log")" "$(stat average_exec_per_sec "$log")" \
    "${cov:-?}" "${ft:-?}" "${corp:-?}" "$(stat peak_rss_mb "$log")"
  rc=$(cat "$run_dir/$h/rc" 2>/dev/null || echo "?")
  if [ "$rc" != 0 ]; then
    failed=1
    echo "---- $h FAILED (exit $rc); end of $log:"
    tail -n 60 "$log"
    ls "$run_dir/$h"/crash-* "$run_dir/$h"/leak-* "$run_dir/$h"/timeout-* "$run_dir/$h"/oom-* 2>/dev/null || true
    echo "---- reproduce: $build/$h <input>"
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: FAILED (inputs and logs in $run_dir)" >&2
  exit 1
fi
echo "fuzz: no crash (logs and grown corpora in $run_dir)"
