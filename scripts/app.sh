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
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv (first run)..."
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("requirements.txt", "rb").read()).hexdigest())')
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
  echo "Installing the app's packages into .venv (first run, or requirements.txt changed); this takes a minute or two..."
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
  echo "$wanted" > "$stamp"
  echo "Packages installed."
fi
port=()
if [ -n "${STORYTELLER_PORT:-}" ]; then port=(--server.port "$STORYTELLER_PORT"); fi
# The port asked for (--server.port N or --server.port=N, else STORYTELLER_PORT, else Streamlit's 8501): when something
# already listens there, say what to do instead of Streamlit's bare "Port 8501 is not available".
want=${STORYTELLER_PORT:-8501}
prev=""
for arg in "$@"; do
  case "$arg" in --server.port=*) want=${arg#--server.port=} ;; esac
  if [ "$prev" = "--server.port" ]; then want=$arg; fi
  prev=$arg
done
if ! free=$(.venv/bin/python -c 'import socket, sys; p = int(sys.argv[1]); c = socket.socket(); c.settimeout(1); busy = c.connect_ex(("127.0.0.1", p)) == 0; f = socket.socket(); f.bind(("127.0.0.1", 0)); print(f.getsockname()[1] if busy else ""); sys.exit(1 if busy else 0)' "$want" 2>/dev/null); then
  if [ -n "$free" ]; then
    echo "Port $want is already in use (another Video Storyteller, or another program). Start on a free port:" >&2
    echo "  ./scripts/app.sh --server.port $free    (or STORYTELLER_PORT=$free ./scripts/app.sh)" >&2
    echo "or stop what listens on $want (e.g. 'ss -ltnp | grep :$want' shows it)." >&2
    exit 1
  fi
fi
exec .venv/bin/python -m streamlit run app.py ${port[@]+"${port[@]}"} "$@"
