#!/usr/bin/env bash
# Installs what saelite needs on a fresh Debian/Ubuntu machine: compiler and
# CMake, SQLite (library and the sqlite3 shell), LZ4, OpenBLAS, jansson (JSON),
# xxHash, PCRE2 and Python 3 for the test fixtures. Skips apt when all are present.
set -euo pipefail

packages=(build-essential cmake pkg-config sqlite3 libsqlite3-dev liblz4-dev libopenblas-dev
          libjansson-dev libxxhash-dev libpcre2-dev python3)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
