#!/usr/bin/env bash
# The main job: installs dependencies, builds the extension, makes the demo dataset
# from this repository's own text and runs sql/demo.sql in the sqlite3 shell: the
# bundled tiny GPT-2 and SAE (examples/tiny) over it, with a progress bar, then a
# short browse session. On a terminal the max token of each example is coloured.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target saelite -j"$(nproc 2>/dev/null || echo 2)"
mkdir -p build/demo
python3 tools/demo/make_demo_dataset.py build/demo/dataset.jsonl
rm -rf build/demo.db build/demo.db-saelite
if [ -t 1 ]; then
  # « » mark the max token: bold red on a terminal
  sqlite3 build/demo.db < sql/demo.sql | sed -e $'s/«/\e[1;31m/g' -e $'s/»/\e[0m/g'
else
  sqlite3 build/demo.db < sql/demo.sql
fi
echo "Browse it yourself: sqlite3 build/demo.db -cmd '.load build/saelite'"
