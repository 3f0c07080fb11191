#!/usr/bin/env bash
# The main job: installs dependencies, builds the extension, makes the bundled
# example (from this repository's own text) and runs sql/demo.sql in the sqlite3
# shell: extraction with a progress bar, then a short browse session.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target saelite -j"$(nproc 2>/dev/null || echo 2)"
[ -f build/example/acts.safetensors ] || python3 examples/make_example.py build/example
rm -rf build/demo.db build/demo.db-saelite
sqlite3 build/demo.db < sql/demo.sql
echo "Browse it yourself: sqlite3 build/demo.db -cmd '.load build/saelite'"
