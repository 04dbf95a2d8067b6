#!/usr/bin/env bash
# A real multi-node rswarm cluster on this machine: every node is its own
# `rswarm daemon` process with its own data dir, run dir and port on
# loopback, formed with join tokens exactly as on separate hosts. It then
# runs a real service on it: a web server (process driver) on a worker,
# answering on 127.0.0.1:$RSWARM_LOCAL_WEB_PORT (default 8080).
#
#   deploy/local-cluster.sh up [--managers M] [--workers W]
#   deploy/local-cluster.sh down
#
# State lives under $RSWARM_LOCAL_DIR (default /tmp/rswarm-local).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${RSWARM_LOCAL_DIR:-/tmp/rswarm-local}
BASE_PORT=${RSWARM_LOCAL_BASE_PORT:-7377}
BIN=${RSWARM_BIN:-$PWD/target/release/rswarm}
WEB_PORT=${RSWARM_LOCAL_WEB_PORT:-8080}

usage() { echo "usage: $0 up [--managers M] [--workers W] | down" >&2; exit 125; }

build() {
  if [ -z "${RSWARM_BIN:-}" ]; then
    if ! command -v cargo >/dev/null 2>&1; then
      echo "cargo not found: install Rust (https://rustup.rs) or set RSWARM_BIN" >&2; exit 1
    fi
    cargo build --release -p rswarm
  fi
}

node_host() { echo "unix://$DIR/$1/run/rswarm.sock"; }
rs() { local n=$1; shift; RSWARM_HOST=$(node_host "$n") "$BIN" "$@"; }

start_node() {
  local name=$1 port=$2
  mkdir -p "$DIR/$name/run" "$DIR/$name/data"
  nohup "$BIN" daemon --data-dir "$DIR/$name/data" --run-dir "$DIR/$name/run" \
    --listen-addr "127.0.0.1:$port" --hostname "$name" >"$DIR/$name/daemon.log" 2>&1 &
  echo $! >"$DIR/$name/pid"
  for _ in $(seq 1 100); do
    if rs "$name" info >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "node $name did not start; see $DIR/$name/daemon.log" >&2; exit 1
}

up() {
  local managers=3 workers=2
  while [ $# -gt 0 ]; do
    case $1 in
      --managers) managers=$2; shift 2;;
      --workers) workers=$2; shift 2;;
      *) usage;;
    esac
  done
  [ "$managers" -ge 1 ] || { echo "--managers must be at least 1" >&2; exit 125; }
  if [ -d "$DIR" ] && ls "$DIR"/*/pid >/dev/null 2>&1; then
    echo "a local cluster already runs in $DIR: run '$0 down' first" >&2; exit 1
  fi
  build
  local names=() i
  for i in $(seq 1 "$managers"); do names+=("manager$i"); done
  for i in $(seq 1 "$workers"); do names+=("worker$i"); done
  local port=$BASE_PORT
  for n in "${names[@]}"; do start_node "$n" "$port"; port=$((port + 1)); done
  rs manager1 init --advertise-addr "127.0.0.1:$BASE_PORT" >/dev/null
  local mtoken wtoken
  mtoken=$(rs manager1 join-token -q manager)
  wtoken=$(rs manager1 join-token -q worker)
  port=$BASE_PORT
  for n in "${names[@]}"; do
    if [ "$n" != manager1 ]; then
      local token=$wtoken
      case $n in manager*) token=$mtoken;; esac
      rs "$n" join --token "$token" --advertise-addr "127.0.0.1:$port" "127.0.0.1:$BASE_PORT" >/dev/null
    fi
    port=$((port + 1))
  done
  local total=${#names[@]}
  for _ in $(seq 1 300); do
    if [ "$(rs manager1 node ls --format json | grep -c '"Status":"Ready"')" -eq "$total" ]; then break; fi
    sleep 0.2
  done
  rs manager1 node ls
  echo
  serve_web
  echo
  echo "export RSWARM_HOST=$(node_host manager1)"
}

# The demo service: python's web server, one replica on a worker (all nodes
# share this machine's ports, so one replica per published port).
serve_web() {
  command -v python3 >/dev/null 2>&1 || apt-get install -y -qq python3-minimal >/dev/null
  command -v curl >/dev/null 2>&1 || apt-get install -y -qq curl >/dev/null
  local site=$DIR/site
  mkdir -p "$site"
  echo "hello from rswarm" >"$site/index.html"
  rs manager1 service create --driver process --name web --replicas 1 \
    --publish "published=$WEB_PORT,target=$WEB_PORT,mode=host" \
    "$(command -v python3)" -m http.server "$WEB_PORT" --bind 127.0.0.1 --directory "$site"
  rs manager1 service ps web
  for _ in $(seq 1 50); do
    if curl -fsS "http://127.0.0.1:$WEB_PORT/" 2>/dev/null; then
      echo "service web answers on http://127.0.0.1:$WEB_PORT/"
      return 0
    fi
    sleep 0.2
  done
  echo "service web does not answer on 127.0.0.1:$WEB_PORT; see 'rswarm service logs web'" >&2
  exit 1
}

down() {
  [ -d "$DIR" ] || { echo "no local cluster in $DIR"; return 0; }
  # Leaving stops each node's tasks; stopping a daemon alone leaves them
  # running under their shims, as it should on a real host.
  for pidfile in "$DIR"/*/pid; do
    [ -f "$pidfile" ] || continue
    rs "$(basename "$(dirname "$pidfile")")" leave --force >/dev/null 2>&1 || true
  done
  for pidfile in "$DIR"/*/pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 1
  for pidfile in "$DIR"/*/pid; do
    [ -f "$pidfile" ] || continue
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$DIR"
  echo "local cluster removed"
}

case ${1:-} in
  up) shift; up "$@";;
  down) down;;
  *) usage;;
esac
