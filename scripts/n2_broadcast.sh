#!/usr/bin/env bash
# N² broadcast (the shape of uWebSockets' broadcast_test): 320 clients each send one 20-byte text
# message; the server sends every message to all 320 (the sender included); each client sends
# its next message once it has received 320 more deliveries. Reports deliveries/s, the server's
# CPU per delivery and the client's own CPU (is the client the limit?).
#
# Server (ringws --mode broadcast, or a peer's --mode broadcast) pinned to CPU 0; the client,
# `peer-n2` (tokio current_thread, raw TCP, frames counted not parsed) pinned to CPU 1. Rounds
# are interleaved across servers; the medians go to the table printed at the end and appended
# to $OUT if set.
#
# Usage: scripts/n2_broadcast.sh             # 3 rounds x (2 s warm-up + 8 s measured)
#        QUICK=1 scripts/n2_broadcast.sh     # 2 rounds x (1 s + 4 s)
# Env: ROUNDS WARMUP_S MEASURE_S CONNS=320 SIZE=20 SERVERS=... PORT_BASE=19600 OUT= SKIP_BUILD=1
#      (a SERVERS entry "ringws:/path/to/ringws" runs another ringws build: A/B of two engines)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-0}" == 1 ]]; then
    ROUNDS=${ROUNDS:-2} WARMUP_S=${WARMUP_S:-1} MEASURE_S=${MEASURE_S:-4}
fi
ROUNDS=${ROUNDS:-3}
WARMUP_S=${WARMUP_S:-2}
MEASURE_S=${MEASURE_S:-8}
CONNS=${CONNS:-320}
SIZE=${SIZE:-20}
SERVERS=${SERVERS:-"ringws fastwebsockets tungstenite tokio-websockets"}
PORT_BASE=${PORT_BASE:-19600}
BIN=target/release
WORK=target/compare
mkdir -p "$WORK"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bin ringws
    cargo build --release -p ringws-peers
fi

SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap cleanup EXIT INT TERM

start_server() {
    local name=$1 port=$2 log=$WORK/n2_server.log
    case $name in
        ringws) taskset -c 0 "$BIN/ringws" serve --workers 1 --no-pin --mode broadcast --port "$port" >"$log" 2>&1 & ;;
        ringws:*) taskset -c 0 "${name#ringws:}" serve --workers 1 --no-pin --mode broadcast --port "$port" >"$log" 2>&1 & ;;
        *) taskset -c 0 "$BIN/peer-$name" --mode broadcast --port "$port" >"$log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "n2: $name did not start" >&2
    cat "$log" >&2
    exit 1
}

RUNS=$WORK/n2_runs.txt
: >"$RUNS"
port=$PORT_BASE
for round in $(seq "$ROUNDS"); do
    for name in $SERVERS; do
        port=$((port + 1))
        start_server "$name" "$port"
        line=$(timeout $((${WARMUP_S%.*} + ${MEASURE_S%.*} + 30)) taskset -c 1 "$BIN/peer-n2" --port "$port" \
            --conns "$CONNS" --size "$SIZE" --warmup-s "$WARMUP_S" --duration-s "$MEASURE_S" \
            --server-pid "$SERVER_PID" 2>&1 | tail -1) || true
        cleanup
        echo "$name round=$round $line" | tee -a "$RUNS"
    done
done

python3 - "$RUNS" "$(git rev-parse --short HEAD)" "$ROUNDS" "$WARMUP_S" "$MEASURE_S" >"$WORK/n2_table.md" <<'EOF'
import collections, datetime, re, statistics, sys
runs, commit, rounds, warm, meas = sys.argv[1:]
by = collections.defaultdict(list)
for line in open(runs):
    kv = dict(re.findall(r"(\w+)=([\d.]+)", line))
    if "deliveries_per_s" in kv:
        by[line.split()[0]].append(kv)
med = lambda name, k: statistics.median(float(r[k]) for r in by[name])
print(f"N² broadcast, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit `{commit}`, "
      f"`scripts/n2_broadcast.sh` ({rounds} rounds; {warm} s warm-up, {meas} s measured); medians.\n")
print("| server | deliveries/s | server ns/delivery | server CPU% | client CPU% |")
print("|---|---:|---:|---:|---:|")
for name in by:
    print(f"| {name} | {med(name, 'deliveries_per_s'):,.0f} | {med(name, 'server_ns_per_delivery'):.1f} | "
          f"{med(name, 'server_cpu_pct'):.0f} | {med(name, 'client_cpu_pct'):.0f} |")
EOF
cat "$WORK/n2_table.md"
if [[ -n "${OUT:-}" ]]; then
    { echo; cat "$WORK/n2_table.md"; } >>"$OUT"
fi
