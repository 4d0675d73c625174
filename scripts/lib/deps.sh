# Installs the system packages the project needs, once, on Debian.
# Sourced by scripts/test.sh and scripts/demo.sh.

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_build_deps() {
  command -v cargo >/dev/null || { echo "cargo is missing: install Rust (rustup) first" >&2; exit 1; }
  apt_install gcc pkg-config sqlite3 systemd
}

# PostgreSQL server binaries for the private test clusters.
ensure_postgres() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql
  fi
}

# unixODBC and the ODBC drivers the ODBC provider is tested with (SQLite,
# PostgreSQL, MariaDB), and a MariaDB server for the tests to start.
ensure_odbc() {
  apt_install unixodbc unixodbc-dev odbc-postgresql libsqliteodbc odbc-mariadb mariadb-server
}
