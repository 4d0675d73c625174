# A private PostgreSQL cluster for scripts (never the machine's own on 5432).
# Usage: source scripts/lib/pg.sh; pg_start DIR PORT; pg_psql DB -c "…"; pg_stop DIR

# (Empty before ensure_postgres installed it: sourced under `set -e`.)
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)

# PG_BIN as set above, or found now (sourced before ensure_postgres).
_pg_bin() {
  [ -n "$PG_BIN" ] || PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  echo "$PG_BIN"
}

_pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 "$@"; else env -i PATH=/usr/bin:/bin LC_ALL=C.UTF-8 "$@"; fi
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# pg_start DIR PORT [extra server options]
pg_start() {
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown -R postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    _pg_as_owner "$(_pg_bin)/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 -N >/dev/null
  fi
  _pg_as_owner "$(_pg_bin)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 $*" \
    start >/dev/null
  PG_PORT=$port
}

pg_stop() {
  _pg_as_owner "$(_pg_bin)/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}

# pg_work_dir NAME [COMMAND]: a private directory $WORK (/tmp/NAME.XXXXXX)
# for a script's cluster ($WORK/pg) and worker ($RUN_PID). On exit the
# worker gets SIGTERM and is waited for, COMMAND runs (e.g. stopping a
# MariaDB there), the cluster stops and the directory goes.
pg_work_dir() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX"); chmod 755 "$WORK"
  RUN_PID=""; _PG_WORK_EXTRA=${2:-}
  trap _pg_work_cleanup EXIT
}

_pg_work_cleanup() {
  [ -n "$RUN_PID" ] && kill -TERM "$RUN_PID" 2>/dev/null && wait "$RUN_PID" 2>/dev/null || true
  [ -n "$_PG_WORK_EXTRA" ] && $_PG_WORK_EXTRA || true
  pg_stop "$WORK/pg"; rm -rf "$WORK"
}

# pg_psql DB psql-args…
pg_psql() {
  local db=$1; shift
  env -i PATH=/usr/bin:/bin psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" "$@"
}

pg_url() {
  echo "postgres://postgres@127.0.0.1:$PG_PORT/$1"
}
