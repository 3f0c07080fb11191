#!/usr/bin/env bash
# The main job: installs dependencies, builds the extension, makes the demo dataset
# from this repository's own text and runs sql/demo.sql in the sqlite3 shell: the
# bundled tiny GPT-2 and SAE (examples/tiny) over it, with a progress bar, then a
# short browse session. On a terminal, highlight() shades each example's active tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target saelite -j"$(nproc 2>/dev/null || echo 2)"
mkdir -p build/demo
python3 tools/demo/make_demo_dataset.py build/demo/dataset.jsonl
rm -rf build/demo.db build/demo.db-saelite
if [ -t 1 ]; then
  # highlight(..., 'ansi'): backgrounds shaded by activation (else «token:activation»)
  sqlite3 -cmd ".parameter set @highlight 'ansi'" build/demo.db < sql/demo.sql
else
  sqlite3 build/demo.db < sql/demo.sql
fi
echo "Browse it yourself: sqlite3 build/demo.db -cmd '.load build/saelite'"
