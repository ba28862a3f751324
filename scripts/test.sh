#!/usr/bin/env bash
# Install everything the tests need (Python packages in .venv, Debian's chromium) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
.venv/bin/ruff check storyteller_core storyteller_ui tests pages app.py ui.py bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
