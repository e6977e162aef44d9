#!/usr/bin/env bash
# Starts PgBouncer in transaction pooling mode on 127.0.0.1:$PGBOUNCER_PORT
# (6432 by default), in front of the PostgreSQL server at 127.0.0.1:5432, for
# tests/test_pgbouncer.py. Installs Debian's package first if it is missing
# (as root). Trust authentication for the user postgres, as the tests' own
# PostgreSQL URL uses. `.ci/pgbouncer.sh stop` stops it.
set -euo pipefail
port=${PGBOUNCER_PORT:-6432}
dir=${PGBOUNCER_DIR:-/tmp/feedback-pgbouncer-$port}
bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)

if [ "${1:-}" = stop ]; then
  if [ -f "$dir/pgbouncer.pid" ]; then
    kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
  fi
  exit 0
fi

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
if listening; then
  echo "something already listens on 127.0.0.1:$port: using it as PgBouncer"
  exit 0
fi

if [ ! -x "$bin" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
  bin=/usr/sbin/pgbouncer
fi

mkdir -p "$dir"
cat >"$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
echo '"postgres" ""' >"$dir/userlist.txt"

if [ "$(id -u)" = 0 ]; then
  chown -R postgres "$dir"  # PgBouncer will not run as root
  "$bin" -d -u postgres "$dir/pgbouncer.ini"
else
  "$bin" -d "$dir/pgbouncer.ini"
fi
for _ in $(seq 50); do
  if listening; then
    echo "PgBouncer listening on 127.0.0.1:$port (transaction pooling)"
    exit 0
  fi
  sleep 0.1
done
echo "PgBouncer did not start; see $dir/pgbouncer.log" >&2
exit 1
