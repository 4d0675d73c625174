# A private MariaDB server for scripts (never the machine's own).
# Usage: source scripts/lib/mariadb.sh; maria_start DIR PORT; maria_sql DB "…"; maria_stop DIR

MARIA_USER=connector
MARIA_PASSWORD=connector-bench

maria_start() {
  local dir=$1 port=$2 owner=()
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown -R mysql:mysql "$dir"; owner=(--user=mysql); fi
  mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db "${owner[@]}" >/dev/null
  mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/mysqld.sock" --port="$port" \
    --bind-address=127.0.0.1 --log-error="$dir/error.log" --pid-file="$dir/mysqld.pid" \
    --innodb-buffer-pool-size=512M --innodb-flush-log-at-trx-commit=1 --skip-name-resolve \
    "${owner[@]}" >/dev/null 2>&1 &
  MARIA_SOCKET=$dir/mysqld.sock; MARIA_PORT=$port
  for _ in $(seq 1 300); do maria_root "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
  maria_root "CREATE USER IF NOT EXISTS '$MARIA_USER'@'%' IDENTIFIED BY '$MARIA_PASSWORD'; GRANT ALL ON *.* TO '$MARIA_USER'@'%'"
}

maria_root() {
  mariadb --no-defaults --socket="$MARIA_SOCKET" -u root --batch --skip-column-names -e "$1"
}

# maria_sql DB SQL
maria_sql() {
  maria_root "USE \`$1\`; $2"
}

maria_odbc() {
  echo "Driver={MariaDB Unicode};Server=127.0.0.1;Port=$MARIA_PORT;Database=$1;Uid=$MARIA_USER;Pwd=$MARIA_PASSWORD;"
}

maria_stop() {
  [ -f "$1/mysqld.pid" ] && kill "$(cat "$1/mysqld.pid")" 2>/dev/null || true
  for _ in $(seq 1 100); do [ -f "$1/mysqld.pid" ] || break; sleep 0.1; done
}
