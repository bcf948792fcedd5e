#!/usr/bin/env bash
# Create the project environment if missing and install everything plexray needs:
# system packages and the Python package with its dev extra. Usage: install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

# System packages: espeak-ng always (speech synthesis); chromium too with --test (the browser test).
packages=()
command -v espeak-ng >/dev/null 2>&1 || packages+=(espeak-ng)
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then packages+=(chromium); fi
if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${packages[*]} with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  else
    echo "error: plexray needs the system package(s) '${packages[*]}' (Debian/Ubuntu: sudo apt-get install ${packages[*]})" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[dev]'
  touch "$VENV/.installed"
fi
