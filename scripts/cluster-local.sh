#!/usr/bin/env bash
# Starts a local cluster by hand: nats-server (JetStream) and redis-server on their own ports, then
# the auth, thing, command, gateway and edge roles as separate processes, with deploy/cluster.example.toml.
# Logs and data go to ./cluster-local/. Ctrl-C stops everything.
#   usage: scripts/cluster-local.sh [EDGES]     (default 2 edges: MQTT on 1884, 1885, ...)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
edges="${1:-2}"
work="$root/cluster-local"
mkdir -p "$work/nats"
config="$root/deploy/cluster.example.toml"
tether="${TETHER_BIN:-$root/target-bin/tether}"
if [[ ! -x "$tether" ]]; then
    cargo build --release -p tether
    tether="${CARGO_TARGET_DIR:-/var/tmp/tether-target}/release/tether"
fi
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# NATS_SYNC_ALWAYS=1: sync_interval always, so a JetStream ack (and a device's PUBACK) means the
# message is on disk (what production runs; it costs throughput, see docs/cluster.md).
cat >"$work/nats.conf" <<CONF
host: 127.0.0.1
port: 14222
jetstream { store_dir: "$work/nats"${NATS_SYNC_ALWAYS:+, sync_interval: "always"} }
CONF
"$root/.venv/bin/nats-server" -c "$work/nats.conf" >"$work/nats.log" 2>&1 & pids+=($!)
redis-server --bind 127.0.0.1 --port 16379 --save "" --appendonly no >"$work/redis.log" 2>&1 & pids+=($!)
sleep 1
TETHER_NODE_ID=auth-1 TETHER_HEALTH_ADDR=127.0.0.1:9091 "$tether" auth --config "$config" >"$work/auth.log" 2>&1 & pids+=($!)
TETHER_NODE_ID=thing-1 TETHER_HEALTH_ADDR=127.0.0.1:9093 "$tether" thing --config "$config" >"$work/thing.log" 2>&1 & pids+=($!)
sleep 1
TETHER_NODE_ID=command-1 TETHER_HEALTH_ADDR=127.0.0.1:9094 "$tether" command --config "$config" >"$work/command.log" 2>&1 & pids+=($!)
TETHER_NODE_ID=gateway-1 TETHER_HEALTH_ADDR=127.0.0.1:9092 "$tether" gateway --config "$config" >"$work/gateway.log" 2>&1 & pids+=($!)
for ((i = 0; i < edges; i++)); do
    TETHER_NODE_ID="edge-$i" TETHER_HEALTH_ADDR="127.0.0.1:$((9100 + i))" TETHER_EDGE_MQTT_ADDR="0.0.0.0:$((1884 + i))" \
        "$tether" edge --config "$config" >"$work/edge-$i.log" 2>&1 & pids+=($!)
done
echo "cluster starting: API http://127.0.0.1:8080/api/v1 (admin key in $config), MQTT on 1884..$((1884 + edges - 1))"
echo "readiness: curl 127.0.0.1:9091/readyz (auth), :9093 (thing), :9094 (command), :9092 (gateway), :9100.. (edges); logs in $work"
wait
