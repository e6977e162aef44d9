#!/usr/bin/env bash
# Runs the feedback-service benchmark; results go to benchmarks/results/latest.{json,md}.
#   benchmarks/run.sh            full mode, every target (about 35-40 minutes)
#   benchmarks/run.sh --quick    short runs to try it (about 6-7 minutes once the SQLite databases are cached)
# Other options are passed to benchmarks/bench.py (see --help there).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
python=${PYTHON:-python3}

# The load generator: h2load, from Debian's nghttp2-client.
if ! command -v h2load >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing nghttp2-client (h2load) ..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
  else
    echo "h2load is missing: install nghttp2-client (apt-get install nghttp2-client)" >&2
    exit 1
  fi
fi

# The service's own venv (.venv), created or refreshed by the project's script.
"$root/scripts/dev" setup

# The peer's venv (benchmarks/.venv), kept apart from the service's dependencies.
venv=$here/.venv
stamp=$venv/.installed
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$here/requirements-peer.txt" -nt "$stamp" ]; then
  echo "installing the peer's dependencies into $venv ..." >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements-peer.txt"
  touch "$stamp"
fi

cd "$root"
exec "$root/.venv/bin/python" "$here/bench.py" "$@"
