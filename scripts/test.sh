#!/usr/bin/env bash
# Install everything the tests need (Python packages in .venv, Debian's chromium) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian's chromium for the browser tests, redis-server for team mode's tests (each started by the tests on loopback).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium fonts-dejavu-core"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
.venv/bin/ruff check storyteller_core storyteller_ui tests pages app.py ui.py bench
.venv/bin/ruff format --check --quiet storyteller_core storyteller_ui tests pages app.py ui.py bench || { echo "ruff format would change the files above: run .venv/bin/ruff format"; exit 1; }
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
