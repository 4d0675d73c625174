#!/usr/bin/env bash
# Runs every test of the workspace on a fresh Debian machine: installs what
# is missing first (system packages, the Rust toolchain's pieces), then
# `cargo test`. Tests that need a server start and stop it themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh
ensure_build_deps
ensure_postgres
cargo test --workspace --all-features --locked "$@"
