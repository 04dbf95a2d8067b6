#!/usr/bin/env bash
# A real multi-host rswarm cluster on this machine. Every node is a host of
# its own: a network namespace with its own address on 192.0.2.0/24, linked
# to the others through a bridge that lives in a namespace of its own (the
# fabric), running one `rswarm daemon` with its own data dir and run dir.
# The cluster is formed with join tokens exactly as on separate machines,
# and runs a real service: busybox's web server in a container (the oci
# driver, runc), one replica per worker, on port $RSWARM_LOCAL_WEB_PORT
# (default 8080) of the host it runs on. The image is built from the
# machine's busybox-static (deploy/busybox-image.py) and served by Debian's
# docker-registry from a host of its own (192.0.2.254:5000); every daemon
# pulls it from there.
#
#   deploy/local-cluster.sh up [--managers M] [--workers W]
#   deploy/local-cluster.sh down
#
# Needs root (it makes network namespaces) and leaves the machine's own
# network alone: no link, route or firewall rule of the root namespace is
# touched, so the hosts' addresses are reachable only from inside a host
# (`ip netns exec rswarm-local-manager1 curl http://192.0.2.4:8080/`). The
# CLI reaches the managers through their unix sockets: `up` ends with the
# `export RSWARM_HOST=...` line for this shell.
#
# State lives under $RSWARM_LOCAL_DIR (default /tmp/rswarm-local); the
# namespaces are named $RSWARM_LOCAL_NETNS-<node> and -fabric (default
# rswarm-local-...).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${RSWARM_LOCAL_DIR:-/tmp/rswarm-local}
NETNS=${RSWARM_LOCAL_NETNS:-rswarm-local}
BIN=${RSWARM_BIN:-$PWD/target/release/rswarm}
WEB_PORT=${RSWARM_LOCAL_WEB_PORT:-8080}
UNDERLAY=192.0.2      # host i (from 1) gets 192.0.2.i
REGISTRY=$UNDERLAY.254:5000
IMAGE=$REGISTRY/rswarm/busybox:latest
PORT=7377             # every host has its own addresses, so all use the default
NODES_MAX=250         # one address each in the /24

usage() { echo "usage: $0 up [--managers M] [--workers W] | down" >&2; exit 125; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "the local cluster makes network namespaces and needs root: run 'sudo $0 $*'" >&2
    exit 1
  fi
}

need_tools() {
  local missing=() tool
  for tool in ip:iproute2 nsenter:util-linux curl:curl python3:python3-minimal runc:runc \
    /usr/bin/busybox:busybox-static docker-registry:docker-registry; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

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
in_host() { local n=$1; shift; ip netns exec "$NETNS-$n" "$@"; }
node_ip() { cat "$DIR/$1/ip"; }

# The fabric: a namespace holding the bridge every host is plugged into.
make_fabric() {
  ip netns add "$NETNS-fabric"
  ip -n "$NETNS-fabric" link add fabric0 type bridge
  ip -n "$NETNS-fabric" link set fabric0 up
}

# Host $1 with address $2: a namespace whose eth0 is a veth into the bridge.
make_host() {
  local name=$1 ip=$2 ns=$NETNS-$1
  ip netns add "$ns"
  ip -n "$NETNS-fabric" link add "p-$name" type veth peer name eth0 netns "$ns"
  ip -n "$NETNS-fabric" link set "p-$name" master fabric0 up
  ip -n "$ns" addr add "$ip/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

start_node() {
  local name=$1 ip=$2
  mkdir -p "$DIR/$name/run" "$DIR/$name/data"
  echo "$ip" >"$DIR/$name/ip"
  make_host "$name" "$ip"
  nohup nsenter --net="/run/netns/$NETNS-$name" -- "$BIN" daemon \
    --data-dir "$DIR/$name/data" --run-dir "$DIR/$name/run" \
    --listen-addr "$ip:$PORT" --hostname "$name" --insecure-registry "$REGISTRY" \
    >"$DIR/$name/daemon.log" 2>&1 &
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
  [ $((managers + workers)) -le $NODES_MAX ] || { echo "at most $NODES_MAX nodes" >&2; exit 125; }
  need_root up
  if [ -e "/run/netns/$NETNS-fabric" ] || ls "$DIR"/*/pid >/dev/null 2>&1; then
    echo "a local cluster already runs (namespace $NETNS-fabric, state in $DIR): run '$0 down' first" >&2
    exit 1
  fi
  need_tools
  build
  local names=() i
  for i in $(seq 1 "$managers"); do names+=("manager$i"); done
  for i in $(seq 1 "$workers"); do names+=("worker$i"); done
  mkdir -p "$DIR"
  make_fabric
  i=1
  for n in "${names[@]}"; do start_node "$n" "$UNDERLAY.$i"; i=$((i + 1)); done
  local first
  first="$(node_ip manager1):$PORT"
  rs manager1 init --advertise-addr "$first" >/dev/null
  local mtoken wtoken
  mtoken=$(rs manager1 join-token -q manager)
  wtoken=$(rs manager1 join-token -q worker)
  for n in "${names[@]}"; do
    [ "$n" != manager1 ] || continue
    local token=$wtoken
    case $n in manager*) token=$mtoken;; esac
    rs "$n" join --token "$token" --advertise-addr "$(node_ip "$n"):$PORT" "$first" >/dev/null
  done
  wait_ready "${#names[@]}"
  rs manager1 node ls
  echo
  start_registry
  serve_web "$workers"
  echo
  echo "hosts: $(for n in "${names[@]}"; do printf '%s=%s ' "$n" "$(node_ip "$n")"; done)"
  echo "their addresses are reachable from inside a host: ip netns exec $NETNS-<node> COMMAND"
  echo
  echo "export RSWARM_HOST=$(node_host manager1)"
}

wait_ready() {
  local total=$1
  for _ in $(seq 1 300); do
    if [ "$(rs manager1 node ls --format json | grep -c '"Status":"Ready"')" -eq "$total" ]; then
      return 0
    fi
    sleep 0.2
  done
  rs manager1 node ls >&2 || true
  echo "not every node became Ready; see $DIR/*/daemon.log" >&2
  exit 1
}

# The registry: Debian's docker-registry on a host of its own, holding the
# demo image built from this machine's busybox-static.
start_registry() {
  local reg=$DIR/registry
  mkdir -p "$reg/data"
  printf 'version: 0.1\nstorage:\n  filesystem: { rootdirectory: %s }\nhttp:\n  addr: %s\n' \
    "$reg/data" "$REGISTRY" >"$reg/config.yml"
  make_host registry "${REGISTRY%:*}"
  nohup ip netns exec "$NETNS-registry" docker-registry serve "$reg/config.yml" \
    >"$reg/registry.log" 2>&1 &
  echo $! >"$reg/pid"
  for _ in $(seq 1 100); do
    if in_host registry curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then
      in_host registry python3 deploy/busybox-image.py --push "$IMAGE"
      return 0
    fi
    sleep 0.1
  done
  echo "the registry did not start; see $reg/registry.log" >&2; exit 1
}

# The demo service: busybox's httpd in a container, one replica per worker
# (one on a manager when there is no worker), each on port $WEB_PORT of its
# own host (the container shares the host's network until overlay networks
# exist).
serve_web() {
  local replicas=$1 placement=(--constraint node.role==worker)
  if [ "$replicas" -lt 1 ]; then replicas=1; placement=(); fi
  rs manager1 service create --name web --replicas "$replicas" --network host \
    "${placement[@]}" --publish "published=$WEB_PORT,target=$WEB_PORT,mode=host" \
    "$IMAGE" httpd -f -p "$WEB_PORT" -h /www
  rs manager1 service ps web
  local answering=()
  for _ in $(seq 1 50); do
    answering=()
    for d in "$DIR"/*/ip; do
      local ip
      ip=$(cat "$d")
      if in_host manager1 curl -fsS --max-time 1 "http://$ip:$WEB_PORT/" >/dev/null 2>&1; then
        answering+=("http://$ip:$WEB_PORT/")
      fi
    done
    if [ ${#answering[@]} -eq "$replicas" ]; then
      echo "service web answers on ${answering[*]}"
      echo "  ip netns exec $NETNS-manager1 curl ${answering[0]}"
      in_host manager1 curl -fsS "${answering[0]}" | sed 's/^/  /'
      return 0
    fi
    sleep 0.2
  done
  echo "service web answers on ${#answering[@]} of $replicas hosts; see 'rswarm service logs web'" >&2
  exit 1
}

down() {
  need_root down
  if [ -d "$DIR" ]; then
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
  fi
  # Whatever still runs on a host goes with it.
  local ns pid
  for ns in /run/netns/"$NETNS"-*; do
    [ -e "$ns" ] || continue
    for pid in $(ip netns pids "$(basename "$ns")"); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns delete "$(basename "$ns")"
  done
  rm -rf "$DIR"
  echo "local cluster removed"
}

case ${1:-} in
  up) shift; up "$@";;
  down) down;;
  *) usage;;
esac
