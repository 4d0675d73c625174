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

# Rust 1.89 or later (std's File::try_lock): rustup's stable toolchain when
# no cargo is on PATH (a fresh machine) or it is older (Debian's own),
# installed for the current user.
ensure_rust() {
  [ -f "$HOME/.cargo/env" ] && source "$HOME/.cargo/env"
  if command -v cargo >/dev/null; then
    local minor
    minor=$(rustc --version 2>/dev/null | sed -n 's/^rustc 1\.\([0-9]*\).*/\1/p' || true)
    [ "${minor:-0}" -ge 89 ] && return 0
    echo "rustc $(rustc --version 2>/dev/null) is older than 1.89" >&2
  fi
  apt_install curl ca-certificates
  echo "installing Rust (rustup, stable, minimal profile)" >&2
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component clippy,rustfmt >&2
  source "$HOME/.cargo/env"
}

ensure_build_deps() {
  # python3: a free port for the private clusters (scripts/lib/pg.sh).
  apt_install gcc libc6-dev pkg-config sqlite3 systemd python3
  ensure_rust
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
