#!/usr/bin/env bash
# Soak test (not CI): DURATION seconds (default 600) of mixed load against two `ringws serve`
# processes, an echo server (echo, connect/disconnect churn, hostile peers) and a pubsub server
# (fanout to 16 subscribers), driven by the soak client in tests/hardening_soak.rs. Every
# SAMPLE_S seconds (default 10) it records each server's RSS (/proc/PID/status VmRSS), its open
# descriptors (/proc/PID/fd) and its /metrics gauges, into reports/soak/samples.csv.
#
# It fails when
#   - the soak client saw a message lost, duplicated or reordered (or any other failure);
#   - RSS keeps growing after warm-up: a least-squares line through the samples of the last
#     2/3 of the run has a slope whose growth over that window exceeds
#     max(RSS_GROWTH_MIN_KB (default 4096), RSS_GROWTH_PCT (default 10) % of the mean RSS);
#   - after the load, the connection gauges, fixed-file slots and slab slots are not back at
#     their idle values, or the server holds more descriptors than before the load.
#
#   DURATION=120 scripts/soak.sh
set -euo pipefail

cd "$(dirname "$0")/.."
duration="${DURATION:-600}"
sample_s="${SAMPLE_S:-10}"
growth_min_kb="${RSS_GROWTH_MIN_KB:-4096}"
growth_pct="${RSS_GROWTH_PCT:-10}"
out="reports/soak"
mkdir -p "$out"

cargo build --release --bin ringws
cargo test --release --test hardening_soak --no-run

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# start_server NAME ARGS...: starts it, sets NAME_pid and NAME_addr.
start_server() {
    local name=$1
    shift
    local log="$out/$name.log"
    target/release/ringws serve --port 0 --workers 2 --no-pin "$@" >"$log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        grep -q "listening on" "$log" && break
        sleep 0.1
    done
    local addr
    addr=$(sed -n 's|^listening on ws://||p' "$log")
    [ -n "$addr" ] || { echo "soak: $name did not start"; cat "$log"; exit 1; }
    printf -v "${name}_pid" '%s' "$pid"
    printf -v "${name}_addr" '%s' "$addr"
}

start_server echo --handshake-timeout-ms 2000 --close-timeout-ms 2000 \
    --ping-interval-ms 5000 --pong-timeout-ms 5000
start_server pubsub --mode pubsub
echo "soak: echo server $echo_addr (pid $echo_pid), pubsub server $pubsub_addr (pid $pubsub_pid), $duration s"

metric() { # metric ADDR NAME -> value
    curl -s "http://$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}
fds() { ls "/proc/$1/fd" | wc -l; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

fds_before_echo=$(fds "$echo_pid")
fds_before_pubsub=$(fds "$pubsub_pid")

SOAK_ECHO_ADDR=$echo_addr SOAK_PUBSUB_ADDR=$pubsub_addr SOAK_SECS=$duration \
    cargo test --release --test hardening_soak -- --ignored --nocapture >"$out/client.log" 2>&1 &
client=$!
pids+=("$client")

csv="$out/samples.csv"
echo "t_s,server,rss_kb,fds,open,fixed_files,slab_slots" >"$csv"
start=$(date +%s)
while kill -0 "$client" 2>/dev/null; do
    t=$(($(date +%s) - start))
    for s in echo pubsub; do
        pid_var="${s}_pid" addr_var="${s}_addr"
        pid=${!pid_var} addr=${!addr_var}
        echo "$t,$s,$(rss_kb "$pid"),$(fds "$pid"),$(metric "$addr" 'ringws_connections{state="open"}'),$(metric "$addr" ringws_fixed_files_in_use),$(metric "$addr" ringws_slab_slots)" >>"$csv"
    done
    tail -n 2 "$csv" | sed 's/^/soak: /'
    # Sleep in small steps so the end of the client is seen at once.
    for _ in $(seq "$((sample_s * 10))"); do
        kill -0 "$client" 2>/dev/null || break
        sleep 0.1
    done
done
client_ok=0
wait "$client" || client_ok=$?
tail -n 5 "$out/client.log"

fail=0
if [ "$client_ok" != 0 ]; then
    echo "soak: FAIL: the soak client failed (see $out/client.log)"
    fail=1
fi

# RSS trend per server over the last 2/3 of the samples.
for s in echo pubsub; do
    verdict=$(awk -F, -v s="$s" -v gmin="$growth_min_kb" -v gpct="$growth_pct" '
        $2 == s { t[n] = $1; r[n] = $3; n++ }
        END {
            from = int(n / 3); m = n - from
            if (m < 3) { print "SKIP too few samples (" n ")"; exit }
            for (i = from; i < n; i++) { st += t[i]; sr += r[i] }
            mt = st / m; mr = sr / m
            for (i = from; i < n; i++) { num += (t[i] - mt) * (r[i] - mr); den += (t[i] - mt) ^ 2 }
            slope = den > 0 ? num / den : 0
            growth = slope * (t[n - 1] - t[from])
            limit = gmin > mr * gpct / 100 ? gmin : mr * gpct / 100
            printf "%s slope %.1f KiB/s, growth %.0f KiB over %d s after warm-up (limit %.0f KiB), RSS %d..%d KiB\n", \
                (growth > limit ? "FAIL" : "OK"), slope, growth, t[n - 1] - t[from], limit, r[from], r[n - 1]
        }' "$csv")
    echo "soak: $s RSS: $verdict"
    case $verdict in FAIL*) fail=1 ;; esac
done

# Back to idle: no connection, slot or descriptor left behind.
for s in echo pubsub; do
    pid_var="${s}_pid" addr_var="${s}_addr" before_var="fds_before_$s"
    pid=${!pid_var} addr=${!addr_var}
    ok=0
    for _ in $(seq 300); do
        if [ "$(metric "$addr" 'ringws_connections{state="open"}')" = 0 ] &&
            [ "$(metric "$addr" 'ringws_connections{state="handshaking"}')" = 1 ] &&
            [ "$(metric "$addr" 'ringws_connections{state="closing"}')" = 0 ] &&
            [ "$(metric "$addr" ringws_fixed_files_in_use)" = 1 ] &&
            [ "$(metric "$addr" ringws_slab_slots)" = 1 ]; then
            ok=1
            break
        fi
        sleep 0.1
    done
    after=$(fds "$pid")
    echo "soak: $s idle again: $([ $ok = 1 ] && echo yes || echo NO), descriptors ${!before_var} before, $after after"
    if [ $ok != 1 ] || [ "$after" -gt "${!before_var}" ]; then
        curl -s "http://$addr/metrics" | grep -E "connections|fixed_files|slab" || true
        fail=1
    fi
done

if [ $fail = 0 ]; then
    echo "soak: PASS ($duration s; samples in $csv)"
else
    echo "soak: FAIL (samples in $csv)"
fi
exit $fail
