#!/usr/bin/env bash
# Installs what saelite needs on a fresh Debian/Ubuntu machine: compiler and
# CMake, SQLite (library and the sqlite3 shell), LZ4, OpenBLAS, jansson (JSON),
# xxHash, PCRE2 and Python 3 for the test fixtures; strace (test_registry counts file
# opens); clang for the build_matrix test
# (tests/build/build_matrix.sh builds with gcc and with clang; scripts/fuzz.sh adds
# clang's libFuzzer runtime); for the GUI (scripts/gui.sh) and its test, Debian's
# chromium and Datasette from PyPI in a virtual environment .venv-gui (Debian's pip
# is externally managed); for tests/sql/test_smollm2.py, a virtual environment .venv-models
# with the packages tools/gguf/convert_gguf.py needs (gguf, numpy, tokenizers, safetensors;
# no torch), at the versions tests/data/smollm2/reference.json was made with. Skips what is
# already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

packages=(build-essential cmake pkg-config sqlite3 libsqlite3-dev liblz4-dev libopenblas-dev
          libjansson-dev libxxhash-dev libpcre2-dev python3 python3-venv clang strace chromium)
datasette_version=0.65.2
venv="$root/.venv-gui"
models_packages=(gguf==0.19.0 numpy==2.4.6 tokenizers==0.23.3 safetensors==0.8.0)
models_venv="$root/.venv-models"

# Datasette in .venv-gui, made with Debian's python3: its sqlite3 module can load
# extensions (some other builds of Python cannot).
install_datasette() {
  if "$venv/bin/datasette" --version 2>/dev/null | grep -qx "datasette, version $datasette_version"; then
    return
  fi
  echo "install-deps: Datasette $datasette_version into $venv"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "datasette==$datasette_version"
  "$venv/bin/python" -c "import sqlite3; sqlite3.connect(':memory:').enable_load_extension(True)"
}

# The GGUF converter's packages in .venv-models (tests/sql/test_smollm2.py converts
# SmolLM2-135M with it); remade when a pinned version differs.
install_models_venv() {
  local want have
  want="$(printf '%s\n' "${models_packages[@]}")"
  have="$("$models_venv/bin/python" - "${models_packages[@]}" 2>/dev/null <<'PY' || true
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name = spec.split("==")[0]
    print("%s==%s" % (name, version(name)))
PY
)"
  [ "$have" = "$want" ] && return
  echo "install-deps: ${models_packages[*]} into $models_venv"
  rm -rf "$models_venv"
  /usr/bin/python3 -m venv "$models_venv"
  "$models_venv/bin/pip" install -q --disable-pip-version-check "${models_packages[@]}"
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  install_datasette
  install_models_venv
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_datasette
install_models_venv
echo "install-deps: done"
