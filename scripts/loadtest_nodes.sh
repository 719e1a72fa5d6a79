#!/usr/bin/env bash
# Fanout across NODES ringws nodes joined by one Redis: starts redis-server and the nodes
# (`ringws serve --mode pubsub --broker ...`, node i on 127.0.0.(10+i), or in a namespace of its own
# with NETNS=1), spreads the subscribers
# over the nodes round robin (`ringws-load --node-url`), publishes from node 0, and reports the
# fanout completion and delivery latency across nodes, each node's CPU seconds, and each node's
# broker-hop latency (its /metrics). Everything stops by itself (a deadline) and on Ctrl-C.
#
#   scripts/loadtest_nodes.sh                       # 3 nodes, 3,000 subscribers, 200 publishes
#   NODES=3 SUBS=30000 BROADCASTS=100 scripts/loadtest_nodes.sh
#
# Environment: NODES [3], SUBS [3000], SIZE [64], BROADCASTS [200], DURATION s at most [10],
#   INFLIGHT [1],
#   OUT [target/loadtest-nodes], NO_BUILD=1 (skip the build),
#   NETNS=1 (root: each node in its own network namespace with its own address, standing in for
#   a machine: everything runs in a fresh namespace, where a bridge 10.77.0.1/16 carries Redis
#   and the load generator's sources 10.77.0.1.., and node i sits at 10.77.1.(10+i) in namespace
#   ringws-node-$$-i, joined to the bridge by a veth pair; all of it is deleted at the end).
# Without NETNS, loopback addresses only (127.0.0.0/8): the nodes share this machine's loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
SUBS=${SUBS:-3000}
SIZE=${SIZE:-64}
BROADCASTS=${BROADCASTS:-200}
DURATION=${DURATION:-10}
INFLIGHT=${INFLIGHT:-1}
OUT=${OUT:-target/loadtest-nodes}
PORT=9101
REDIS_PORT=6399

if [[ ${NETNS:-} == 1 && -z ${RINGWS_IN_NETNS:-} ]]; then
    [[ ${NO_BUILD:-} == 1 ]] || cargo build --release --bin ringws --bin ringws-load
    exec unshare -n env NO_BUILD=1 RINGWS_IN_NETNS=1 bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi
[[ ${NO_BUILD:-} == 1 ]] || cargo build --release --bin ringws --bin ringws-load
command -v redis-server > /dev/null || { echo "redis-server is not installed (apt-get install redis-server)"; exit 1; }

mkdir -p "$OUT"
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
    wait 2> /dev/null || true
    for ns in "${NSES[@]}"; do ip netns del "$ns" 2> /dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

# Where things are: node i's address, how to run a command in its namespace, Redis's address,
# and the load generator's first source address and count.
NSES=()
SRC_ARGS=()
REDIS_ADDR=127.0.0.1
node_addr() { echo "127.0.0.$((10 + $1))"; }
# (used with `&` only: the exec makes $! the server's own pid, whose CPU time is read below)
in_node() { shift; exec "$@"; }
if [[ -n ${RINGWS_IN_NETNS:-} ]]; then
    SRC_IPS=$(((SUBS + 1 + 19999) / 20000))
    ip link add rwbr0 type bridge
    ip link set rwbr0 up
    for k in $(seq 1 "$SRC_IPS"); do ip addr add "10.77.0.$k/16" dev rwbr0; done
    REDIS_ADDR=10.77.0.1
    SRC_ARGS=(--src-base 10.77.0.1 --src-ips "$SRC_IPS")
    node_addr() { echo "10.77.1.$((10 + $1))"; }
    in_node() { local i=$1; shift; exec ip netns exec "ringws-node-$$-$i" "$@"; }
    for i in $(seq 0 $((NODES - 1))); do
        ns="ringws-node-$$-$i"
        ip netns add "$ns"
        NSES+=("$ns")
        ip link add "rwv$i" type veth peer name eth0 netns "$ns"
        ip link set "rwv$i" master rwbr0 up
        ip -n "$ns" addr add "$(node_addr "$i")/16" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        # The same tuning as the host's (docs/TUNING.md): a namespace starts with defaults.
        ip netns exec "$ns" sysctl -q -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 || true
    done
fi

# Protected mode off: with the namespaces, the nodes reach Redis over the test's own bridge.
redis-server --port "$REDIS_PORT" --bind "$REDIS_ADDR" --protected-mode no --save '' --appendonly no \
    --dir "$DIR" > "$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -h "$REDIS_ADDR" -p "$REDIS_PORT" ping > /dev/null 2>&1 && break; sleep 0.05; done

# A worker's fixed-file table stays under the 20,000 open files a process may have here.
PER_NODE=$(((SUBS + NODES - 1) / NODES))
NODE_WORKERS=$(((PER_NODE + 18999) / 19000))
NODE_PIDS=()
URLS=()
for i in $(seq 0 $((NODES - 1))); do
    addr=$(node_addr "$i")
    in_node "$i" target/release/ringws serve --mode pubsub --addr "$addr" --port "$PORT" --workers "$NODE_WORKERS" --no-pin \
        --connections-per-worker-max $((PER_NODE / NODE_WORKERS + 1000)) \
        --broker "redis://$REDIS_ADDR:$REDIS_PORT/" > "$OUT/node$i.log" 2>&1 &
    NODE_PIDS+=($!)
    PIDS+=($!)
    URLS+=("ws://$addr:$PORT/")
done
for i in $(seq 0 $((NODES - 1))); do
    for _ in $(seq 200); do grep -q listening "$OUT/node$i.log" && break; sleep 0.05; done
done

cpu_s() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }
declare -A CPU0
for p in "${NODE_PIDS[@]}"; do CPU0[$p]=$(cpu_s "$p"); done

NODE_ARGS=()
for u in "${URLS[@]:1}"; do NODE_ARGS+=(--node-url "$u"); done
set +e
timeout 300 target/release/ringws-load fanout --mode pubsub --url "${URLS[0]}" "${NODE_ARGS[@]}" "${SRC_ARGS[@]}" \
    --conns "$SUBS" --size "$SIZE" --broadcasts "$BROADCASTS" --duration "$DURATION" --inflight "$INFLIGHT" \
    --deadline-s 240 --quiet --out "$OUT/report.json" > "$OUT/load.txt" 2>&1
rc=$?
set -e
cat "$OUT/load.txt"

echo
echo "per node: CPU seconds while ringws-load ran (connects included), broker hop (publish on node 0 -> this node's workers)"
for i in $(seq 0 $((NODES - 1))); do
    p=${NODE_PIDS[$i]}
    m=$(curl -s "http://$(node_addr "$i"):$PORT/metrics")
    q() { echo "$m" | awk -v k="$1" '$1 == k {print $2}'; }
    printf 'node %d  cpu %6.2f s  hop p50 %s us  p99 %s us  received %s  lost %s  published %s\n' "$i" \
        "$(echo "$(cpu_s "$p") - ${CPU0[$p]}" | bc)" \
        "$(q 'ringws_broker_hop_latency_us{quantile="0.5"}')" \
        "$(q 'ringws_broker_hop_latency_us{quantile="0.99"}')" \
        "$(q ringws_broker_received_total)" "$(q ringws_broker_lost_total)" \
        "$(q ringws_broker_published_total)"
done | tee "$OUT/nodes.txt"
exit $rc
