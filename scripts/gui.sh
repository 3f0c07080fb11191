#!/usr/bin/env bash
# Serves a saelite database in Datasette with the extension loaded, the pages of
# sql/datasette/metadata.yaml (features, feature, examples, probe, density) and the
# plugin in sql/datasette/plugins. Connections are read-only and refuse
# extract_features; see docs/GUI.md.
#
# Usage: scripts/gui.sh [DB] [--port N] [--host ADDR] [--ext PATH] [-- DATASETTE OPTIONS...]
#   DB      default build/demo.db (made by scripts/demo.sh)
#   --port  default 8001; --host default 127.0.0.1 (this machine only)
#   --ext   the extension, default build/saelite.so
# Datasette comes from .venv-gui (scripts/install-deps.sh installs it there).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

db="$root/build/demo.db"
port=8001
host=127.0.0.1
ext="$root/build/saelite.so"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --host) host="$2"; shift 2 ;;
    --ext) ext="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "gui.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) db="$1"; shift ;;
  esac
done

datasette="${DATASETTE:-$root/.venv-gui/bin/datasette}"
if [ ! -x "$datasette" ]; then
  echo "gui.sh: Datasette not found at $datasette: run scripts/install-deps.sh (installs it into .venv-gui)" >&2
  exit 1
fi
[ -f "$ext" ] || ext="$ext.so"
if [ ! -f "$ext" ]; then
  echo "gui.sh: the saelite extension is not at $ext: build it (cmake -S . -B build && cmake --build build)" >&2
  exit 1
fi
if [ ! -f "$db" ]; then
  echo "gui.sh: no database $db (scripts/demo.sh makes build/demo.db)" >&2
  exit 1
fi

name="$(basename "$db")"
echo "gui.sh: serving $db on http://$host:$port/${name%.*} (Ctrl-C stops)"
# --load-extension PATH:ENTRYPOINT (the file is saelite.so, its entry point sqlite3_saelite_init).
# sql_time_limit_ms: a feature page reads one feature's examples from the store; the
# default 1 s is short for a large extraction on a busy machine.
exec "$datasette" serve "$db" \
  --host "$host" --port "$port" \
  --load-extension "$ext:sqlite3_saelite_init" \
  --metadata "$root/sql/datasette/metadata.yaml" \
  --plugins-dir "$root/sql/datasette/plugins" \
  --setting sql_time_limit_ms 20000 \
  "${extra[@]}"
