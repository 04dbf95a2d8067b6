#!/usr/bin/env bash
# Runs rswarm's test suite: builds the binary the cluster tests start, then
# runs every unit, property and cluster test. Installs what it needs on
# Debian (build tools, iproute2, nftables; Rust through rustup when cargo is
# missing). The cluster tests need root: they make network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "sudo"; fi; }

if ! command -v cc >/dev/null 2>&1; then
  $(need_root) apt-get update -qq
  $(need_root) apt-get install -y -qq build-essential
fi
# The multi-host tests make hosts out of network namespaces (ip), break the
# network between them (nft) and start daemons inside them (nsenter, setpriv).
# The container tests run runc, build their image from busybox-static, serve
# it from Debian's registry, and give --init tasks tini.
missing=()
for tool in ip:iproute2 nft:nftables nsenter:util-linux setpriv:util-linux \
  runc:runc /usr/bin/busybox:busybox-static docker-registry:docker-registry \
  /usr/bin/tini-static:tini; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
# The image tests build a busybox image from Debian's busybox-static and
# serve it from Debian's docker-registry on loopback or inside a host.
# (dpkg, not PATH: Debian's dynamic busybox would not run inside an image.)
for package in busybox-static docker-registry; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  $(need_root) apt-get update -qq
  $(need_root) apt-get install -y -qq --no-install-recommends "${missing[@]}"
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
