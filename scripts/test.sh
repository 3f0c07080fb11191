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

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${1:-}" != "--no-sanitize" ]; then
  scripts/fuzz.sh
  echo "== the same suite under AddressSanitizer + UndefinedBehaviorSanitizer =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSAELITE_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi
