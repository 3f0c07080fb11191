#!/usr/bin/env bash
# build_matrix: the C and C++ targets build without a warning with gcc and with clang, at
# each optimization level: 6 build directories (gcc, clang x Debug, RelWithDebInfo, Release)
# configured with -DSAELITE_WERROR=ON, so any warning fails its build. Each builds the
# default target: the extension saelite, the engine, tools/, the unit tests,
# test_kernels_emulated and test_gpu_parity. The CUDA module is skipped
# (-DSAELITE_CUDA=OFF: it would add nvcc to each of the 6); the build of this test's
# parent directory, with nvcc where there is one, covers it.
#
# Usage: build_matrix.sh SOURCE_DIR MATRIX_DIR [CMAKE]    (ctest -R build_matrix runs it;
#        the directories are MATRIX_DIR/<compiler>-<type>, kept: a rerun rebuilds what changed)
# Fails, printing the compiler's messages, if any configure or build fails; exits 77 (the
# test's SKIP_RETURN_CODE) when clang or clang++ is not installed (scripts/install-deps.sh
# installs it). BUILD_MATRIX_JOBS: parallel jobs per build (default 2).
set -uo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 SOURCE_DIR MATRIX_DIR [CMAKE]" >&2
  exit 2
fi
src=$1 root=$2 cmake=${3:-cmake}
jobs=${BUILD_MATRIX_JOBS:-2}
skip=77

# The builds below are configured with SAELITE_BUILD_MATRIX_TEST=OFF, so none of them has
# this test; the variable also stops a run started from inside one of them.
if [ -n "${SAELITE_IN_BUILD_MATRIX:-}" ]; then
  echo "build_matrix: already inside a build_matrix run; not recursing"
  exit $skip
fi
export SAELITE_IN_BUILD_MATRIX=1

for c in clang clang++; do
  if ! command -v "$c" >/dev/null 2>&1; then
    echo "build_matrix: skipped: $c not found (scripts/install-deps.sh installs clang)"
    exit $skip
  fi
done
for c in gcc g++; do
  command -v "$c" >/dev/null 2>&1 || { echo "build_matrix: $c not found" >&2; exit 1; }
done

mkdir -p "$root"
failed=()
t_all=$(date +%s)
for cc in gcc clang; do
  case $cc in
    gcc) cxx=g++ ;;
    clang) cxx=clang++ ;;
  esac
  for type in Debug RelWithDebInfo Release; do
    dir=$root/$cc-$type
    t0=$(date +%s)
    step=configure
    log=$dir.configure.log
    if CC=$cc CXX=$cxx "$cmake" -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE="$type" \
         -DSAELITE_WERROR=ON -DSAELITE_CUDA=OFF -DSAELITE_BUILD_MATRIX_TEST=OFF \
         -DSAELITE_SANITIZE=OFF -DSAELITE_FUZZ=OFF >"$log" 2>&1; then
      step=build
      log=$dir.build.log
      "$cmake" --build "$dir" -j"$jobs" >"$log" 2>&1 && step=
    fi
    if [ -z "$step" ]; then
      printf 'build_matrix: %-6s %-15s ok      %4ss\n' "$cc" "$type" "$(($(date +%s) - t0))"
    else
      printf 'build_matrix: %-6s %-15s FAILED to %s (log %s):\n' "$cc" "$type" "$step" "$log"
      # The compiler's (or CMake's) messages, without make's progress lines.
      grep -Ev '^\[ *[0-9]+%\]|^(Consolidate compiler|Scanning dependencies)|^g?make(\[[0-9]+\])?: ' "$log" |
        tail -n 80
      failed+=("$cc-$type")
    fi
  done
done
echo "build_matrix: 6 builds in $(($(date +%s) - t_all))s (-j$jobs)"
if [ ${#failed[@]} -gt 0 ]; then
  echo "build_matrix: FAILED: ${failed[*]}" >&2
  exit 1
fi
