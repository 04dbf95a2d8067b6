#!/usr/bin/env bash
# Runs rswarm's test suite: builds the binary the cluster tests start, then
# runs every unit, property and cluster test. Installs what it needs on
# Debian (build tools; Rust through rustup when cargo is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "sudo"; fi; }

if ! command -v cc >/dev/null 2>&1; then
  $(need_root) apt-get update -qq
  $(need_root) apt-get install -y -qq build-essential
fi
if ! command -v cargo >/dev/null 2>&1; then
  $(need_root) apt-get update -qq
  $(need_root) apt-get install -y -qq curl ca-certificates
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

cargo build -p rswarm
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
