#!/usr/bin/env bash
# End-to-end scheduling benchmark: 3 manager daemons on loopback and
# `rswarm sim` with N simulated nodes (real identities and sessions, tasks
# reported RUNNING without running anything). Times `service create` of T
# replicas until `service ls` shows T/T, and reports the leader's RSS.
#
#   deploy/bench-e2e.sh [NODES] [TASKS]        (default 1000 100000)
#
# Needs a release build (cargo build --release -p rswarm) or RSWARM_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${1:-1000}
TASKS=${2:-100000}
BIN=${RSWARM_BIN:-$PWD/target/release/rswarm}
DIR=$(mktemp -d /tmp/rswarm-e2e.XXXXXX)
BASE_PORT=${RSWARM_BENCH_BASE_PORT:-27377}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  sleep 1
  kill -9 "${PIDS[@]}" 2>/dev/null || true
  rm -rf "$DIR"
}
PIDS=()
trap cleanup EXIT

rs() { local n=$1; shift; RSWARM_HOST="unix://$DIR/$n/run/rswarm.sock" "$BIN" "$@"; }

for i in 1 2 3; do
  mkdir -p "$DIR/m$i/run"
  "$BIN" daemon --data-dir "$DIR/m$i/data" --run-dir "$DIR/m$i/run" \
    --listen-addr "127.0.0.1:$((BASE_PORT + i))" --hostname "m$i" --log-level warn \
    >"$DIR/m$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do rs "m$i" info >/dev/null 2>&1 && break; sleep 0.1; done
done
rs m1 init --advertise-addr "127.0.0.1:$((BASE_PORT + 1))" >/dev/null
mtoken=$(rs m1 join-token -q manager)
wtoken=$(rs m1 join-token -q worker)
for i in 2 3; do
  rs "m$i" join --token "$mtoken" --advertise-addr "127.0.0.1:$((BASE_PORT + i))" \
    "127.0.0.1:$((BASE_PORT + 1))" >/dev/null
done

"$BIN" sim --nodes "$NODES" --token "$wtoken" --manager "127.0.0.1:$((BASE_PORT + 1))" \
  --state-dir "$DIR/sim" >"$DIR/sim.log" 2>&1 &
PIDS+=($!)
start=$(date +%s.%N)
until [ "$(rs m1 node ls --format json | grep -c '"Status":"Ready"')" -ge $((NODES + 3)) ]; do
  sleep 1
done
echo "$NODES simulated nodes Ready after $(echo "$(date +%s.%N) - $start" | bc) s"

start=$(date +%s.%N)
rs m1 service create -d --driver process --name big --replicas "$TASKS" \
  --constraint node.role==worker /bin/true >/dev/null
until rs m1 service ls --format json | grep -q "\"Replicas\":\"$TASKS/$TASKS\""; do
  sleep 0.5
done
took=$(echo "$(date +%s.%N) - $start" | bc)
echo "service create → $TASKS/$TASKS RUNNING on $NODES nodes: $took s"
for i in 1 2 3; do
  pid=${PIDS[$((i - 1))]}
  echo "m$i RSS: $(awk '/VmRSS/ {print $2}' "/proc/$pid/status") KiB"
done
echo "sim RSS: $(awk '/VmRSS/ {print $2}' "/proc/${PIDS[3]}/status") KiB"
