#!/usr/bin/env bash
# Runs every test of the workspace on a fresh Debian machine: installs what
# is missing first (system packages, the Rust toolchain's pieces), then
# `cargo test`. Tests that need a server start and stop it themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
source scripts/lib/db2.sh
ensure_build_deps
ensure_postgres
ensure_odbc
# The real IBM DB2 ODBC driver (no DB2 server runs here: the test checks
# that a connection string with nothing behind it fails clearly and retries).
CONNECTOR_DB2_DRIVER=$(ensure_db2_clidriver)
export CONNECTOR_DB2_DRIVER
cargo test --workspace --all-features --locked "$@"
