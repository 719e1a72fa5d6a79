#!/usr/bin/env bash
# Soak test (not CI): DURATION seconds (default 600) of mixed load against three `ringws serve`
# processes, an echo server (echo, connect/disconnect churn, hostile peers), a pubsub server
# (fanout to 16 subscribers) and a wss:// echo server (echo, churn, a non-reader and a slow
# reader over TLS, with a throw-away CA made by openssl), driven by the soak client in tests/hardening_soak.rs. Every
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
# The client also runs, throughout: non-readers (the server stops reading them), slow readers
# and ping floods (#16). It prints echo latency percentiles per window of WINDOW_S seconds
# (default 300), and the RSS samples are drawn as reports/soak/rss.svg.
#
#   scripts/soak.sh --duration 3600      # the hour; DURATION=120 scripts/soak.sh also works
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh # make_tls_certs (its start_server is replaced by the one below)
duration="${DURATION:-600}"
while [ $# -gt 0 ]; do
    case $1 in
    --duration) duration=$2; shift 2 ;;
    --window) WINDOW_S=$2; shift 2 ;;
    *) echo "usage: scripts/soak.sh [--duration SECONDS] [--window SECONDS]" >&2; exit 2 ;;
    esac
done
window_s="${WINDOW_S:-300}"
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
    addr=$(sed -n 's|^listening on wss*://||p' "$log")
    [ -n "$addr" ] || { echo "soak: $name did not start"; cat "$log"; exit 1; }
    printf -v "${name}_pid" '%s' "$pid"
    printf -v "${name}_addr" '%s' "$addr"
}

make_tls_certs "$out/certs"
start_server echo --handshake-timeout-ms 2000 --close-timeout-ms 2000 \
    --ping-interval-ms 5000 --pong-timeout-ms 5000
start_server pubsub --mode pubsub
start_server wss --handshake-timeout-ms 2000 --close-timeout-ms 2000 \
    --ping-interval-ms 5000 --pong-timeout-ms 5000 \
    --tls-cert "$out/certs/server.crt" --tls-key "$out/certs/server.key"
echo "soak: echo server $echo_addr (pid $echo_pid), pubsub server $pubsub_addr (pid $pubsub_pid)," \
    "wss echo server $wss_addr (pid $wss_pid), $duration s"
servers="echo pubsub wss"

metric() { # metric ADDR NAME -> value (the wss server's /metrics over TLS)
    local url="http://$1/metrics"
    [ "$1" = "$wss_addr" ] && url="https://$1/metrics"
    curl -s --cacert "$out/certs/ca.crt" "$url" | awk -v n="$2" '$1 == n { print $2 }'
}
fds() { ls "/proc/$1/fd" | wc -l; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

for s in $servers; do
    pid_var="${s}_pid"
    printf -v "fds_before_$s" '%s' "$(fds "${!pid_var}")"
done

SOAK_ECHO_ADDR=$echo_addr SOAK_PUBSUB_ADDR=$pubsub_addr SOAK_SECS=$duration SOAK_WINDOW_S=$window_s \
    SOAK_WSS_ADDR=$wss_addr SOAK_TLS_CA="$out/certs/ca.crt" \
    cargo test --release --test hardening_soak -- --ignored --nocapture >"$out/client.log" 2>&1 &
client=$!
pids+=("$client")

csv="$out/samples.csv"
echo "t_s,server,rss_kb,fds,open,fixed_files,slab_slots" >"$csv"
start=$(date +%s)
while kill -0 "$client" 2>/dev/null; do
    t=$(($(date +%s) - start))
    for s in $servers; do
        pid_var="${s}_pid" addr_var="${s}_addr"
        pid=${!pid_var} addr=${!addr_var}
        echo "$t,$s,$(rss_kb "$pid"),$(fds "$pid"),$(metric "$addr" 'ringws_connections{state="open"}'),$(metric "$addr" ringws_fixed_files_in_use),$(metric "$addr" ringws_slab_slots)" >>"$csv"
    done
    tail -n 3 "$csv" | sed 's/^/soak: /'
    # Sleep in small steps so the end of the client is seen at once.
    for _ in $(seq "$((sample_s * 10))"); do
        kill -0 "$client" 2>/dev/null || break
        sleep 0.1
    done
done
client_ok=0
wait "$client" || client_ok=$?
grep -E "^soak (latency|client)" "$out/client.log" || tail -n 5 "$out/client.log"

# RSS over time, one line per server, as an SVG chart.
awk -F, 'NR > 1 { t[NR] = $1; s[NR] = $2; r[NR] = $3 / 1024; if ($1 > tmax) tmax = $1; if (r[NR] > rmax) rmax = r[NR]; n = NR }
    END {
        W = 800; H = 400; L = 60; B = 40
        if (tmax == 0) tmax = 1; if (rmax == 0) rmax = 1
        printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H
        printf "<text x=\"%d\" y=\"16\">ringws soak: server RSS (MiB) over time (s)</text>\n", L
        printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, H - B, W - 10, H - B
        printf "<line x1=\"%d\" y1=\"30\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, L, H - B
        printf "<text x=\"4\" y=\"34\">%.0f</text><text x=\"4\" y=\"%d\">0</text>\n", rmax, H - B
        printf "<text x=\"%d\" y=\"%d\">%d s</text>\n", W - 60, H - 10, tmax
        split("echo pubsub wss", names, " "); split("#1f77b4 #d62728 #2ca02c", colors, " ")
        for (k = 1; k <= 3; k++) {
            pts = ""
            for (i = 2; i <= n; i++) if (s[i] == names[k])
                pts = pts sprintf("%.1f,%.1f ", L + (W - 10 - L) * t[i] / tmax, (H - B) - (H - B - 30) * r[i] / rmax)
            printf "<polyline fill=\"none\" stroke=\"%s\" points=\"%s\"/>\n", colors[k], pts
            printf "<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>\n", W - 120, 30 + 16 * k, colors[k], names[k]
        }
        print "</svg>"
    }' "$csv" >"$out/rss.svg"
echo "soak: RSS chart in $out/rss.svg"

fail=0
if [ "$client_ok" != 0 ]; then
    echo "soak: FAIL: the soak client failed (see $out/client.log)"
    fail=1
fi

# RSS trend per server over the last 2/3 of the samples.
for s in $servers; do
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
for s in $servers; do
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
        curl -s --cacert "$out/certs/ca.crt" "http://$addr/metrics" "https://$addr/metrics" 2>/dev/null |
            grep -E "connections|fixed_files|slab" || true
        fail=1
    fi
done

if [ $fail = 0 ]; then
    echo "soak: PASS ($duration s; samples in $csv)"
else
    echo "soak: FAIL (samples in $csv)"
fi
exit $fail
