#!/usr/bin/env bash
# Start Video Storyteller and print the link to open (with this run's access token; under systemd the link
# goes to a 0600 file in the data folder instead of the journal); on a desktop the browser opens by itself,
# on that file, so the token is never on a command line. No questions asked, with or without a terminal.
#   port:   ./scripts/app.sh --server.port 8600   or   STORYTELLER_PORT=8600 ./scripts/app.sh
#   token:  STORYTELLER_TOKEN=<your own>, or STORYTELLER_TOKEN=none on a single-user machine
#   names:  STORYTELLER_ALLOWED_HOSTS=storyteller.lan  (besides localhost, 127.0.0.1 and [::1]; any other Host is refused)
# Other arguments go to `streamlit run` as they are. Packages are installed into .venv on the first run
# and again only when requirements.txt changes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.requirements.sha256
wanted=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("requirements.txt", "rb").read()).hexdigest())')
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$wanted" > "$stamp"
fi
port=()
if [ -n "${STORYTELLER_PORT:-}" ]; then port=(--server.port "$STORYTELLER_PORT"); fi
exec .venv/bin/python -m streamlit run app.py ${port[@]+"${port[@]}"} "$@"
