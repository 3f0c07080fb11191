#!/usr/bin/env bash
# The test command: installs dependencies, builds the extension and runs every
# test with ctest; then fuzzes the file parsers for a short while (scripts/fuzz.sh:
# libFuzzer + ASan + UBSan, FUZZ_RUNS inputs per harness); then builds again with
# AddressSanitizer + UBSan and runs the suite there too.
# Usage: scripts/test.sh [--no-sanitize]   (--no-sanitize: neither fuzzing nor the ASan suite)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

# CI builds with warnings as errors (SAELITE_WERROR, OFF for everyone else).
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSAELITE_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${1:-}" != "--no-sanitize" ]; then
  scripts/fuzz.sh
  echo "== the same suite under AddressSanitizer + UndefinedBehaviorSanitizer =="
  # build_matrix ran in the first suite; its builds do not depend on this one's flags.
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSAELITE_SANITIZE=ON -DSAELITE_WERROR=ON \
    -DSAELITE_BUILD_MATRIX_TEST=OFF >/dev/null
  cmake --build build-asan -j"$jobs"
  ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi
