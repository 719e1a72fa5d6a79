#!/usr/bin/env bash
# wss:// side by side: ringws over TLS, tokio-tungstenite + tokio-rustls, fastwebsockets +
# tokio-rustls (all on rustls's ring provider), and ringws over plain ws:// as the baseline.
#
# Like scripts/compare.sh: every server pinned to CPU 0 (`taskset -c 0`, one worker/thread), the
# load generator (one ring) to CPU 1; interleaved rounds (A B C D A B C D …) so that drift on a
# shared machine hits every server alike. Per run, over the measured ringws-load invocation:
#   - echo / fanout: messages (fanout: deliveries) per second, and the server's CPU time
#     (utime + stime from /proc/PID/stat) per message in µs;
#   - handshakes: connections that each open (TCP + TLS + upgrade), send Close and open again, for
#     MEASURE_S: handshakes per second and server CPU µs per handshake, with TLS session
#     resumption off ("full") and on ("resumed": each connection keeps its own ticket cache).
# The certificate is self-signed (openssl CLI), trusted by the client with --tls-ca.
#
# ringws over wss:// needs `ringws serve --tls-cert/--tls-key`; if this build has no such flag,
# its rows are skipped with a note (they run unchanged once the server side is merged).
#
# Usage: scripts/compare_tls.sh          # 3 rounds x (1 s warm-up + 5 s measured)
#        QUICK=1 scripts/compare_tls.sh  # 2 rounds x (1 s + 3 s)
# Knobs (env): ROUNDS WARMUP_S MEASURE_S CONFIGS="100x512 100x16384" FANOUT_CONFIGS="500x512"
#              HANDSHAKE_CONNS=50 SERVERS="ringws-wss tungstenite fastwebsockets ringws-ws"
#              OUT=docs/COMPARE_TLS.md PORT_BASE=19500 SKIP_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-0}" == 1 ]]; then
    ROUNDS=${ROUNDS:-2} WARMUP_S=${WARMUP_S:-1} MEASURE_S=${MEASURE_S:-3}
fi
ROUNDS=${ROUNDS:-3}
WARMUP_S=${WARMUP_S:-1}
MEASURE_S=${MEASURE_S:-5}
CONFIGS=${CONFIGS:-"100x512 100x16384"}
FANOUT_CONFIGS=${FANOUT_CONFIGS-"500x512"}
HANDSHAKE_CONNS=${HANDSHAKE_CONNS:-50}
SERVERS=${SERVERS:-"ringws-wss tungstenite fastwebsockets ringws-ws"}
OUT=${OUT:-docs/COMPARE_TLS.md}
PORT_BASE=${PORT_BASE:-19500}
BIN=target/release
WORK=target/compare-tls
TICK_HZ=$(getconf CLK_TCK)

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bin ringws --bin ringws-load
    cargo build --release -p ringws-peers
fi
mkdir -p "$WORK"
CERT=$WORK/cert.pem KEY=$WORK/key.pem
if [[ ! -s $CERT || ! -s $KEY ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" -keyout "$KEY" -out "$CERT" 2>/dev/null
fi
RINGWS_TLS=0
# Captured first: `grep -q` in a pipe would end it early, and pipefail would call that a failure.
RINGWS_HELP=$("$BIN/ringws" serve --help 2>&1 || true)
[[ $RINGWS_HELP == *--tls-cert* ]] && RINGWS_TLS=1
NOTES=()
if [[ $RINGWS_TLS == 0 && " $SERVERS " == *" ringws-wss "* ]]; then
    NOTES+=("ringws-wss skipped: this ringws build has no --tls-cert (the server side of #12 is not merged here).")
    SERVERS=${SERVERS//ringws-wss/}
fi

RUNS=$WORK/runs.tsv
printf 'kind\tconfig\tserver\tround\tper_s\tserver_us_per_op\tserver_cpu_pct\tload_cpu_pct\terrors\tresumed\n' >"$RUNS"

SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap cleanup EXIT INT TERM

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# start_server NAME MODE PORT: on CPU 0; waits for its "listening on" line. Sets SCHEME.
start_server() {
    local name=$1 mode=$2 port=$3 log=$WORK/server.log
    local tls=(--tls-cert "$CERT" --tls-key "$KEY")
    SCHEME=wss
    case $name in
        ringws-wss) taskset -c 0 "$BIN/ringws" serve --workers 1 --no-pin --mode "$mode" \
                        --port "$port" "${tls[@]}" >"$log" 2>&1 & ;;
        ringws-ws) SCHEME=ws
                   taskset -c 0 "$BIN/ringws" serve --workers 1 --no-pin --mode "$mode" \
                       --port "$port" >"$log" 2>&1 & ;;
        *) taskset -c 0 "$BIN/peer-$name" --mode "$mode" --port "$port" "${tls[@]}" >"$log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 400); do
        grep -q "listening on" "$log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "compare_tls: $name did not start:" >&2
    cat "$log" >&2
    exit 1
}

# load_args SCENARIO CONNS SIZE DURATION PORT JSON RESUME(0|1): sets LOAD (ringws-load on CPU 1,
# one ring; over wss:// it trusts the certificate, and RESUME=0 turns resumption off).
load_args() {
    LOAD=(taskset -c 1 "$BIN/ringws-load" "$1" --url "$SCHEME://127.0.0.1:$5/" --conns "$2"
          --size "$3" --duration "$4" --workers 1 --quiet --out "$6")
    if [[ $SCHEME == wss ]]; then
        LOAD+=(--tls-ca "$CERT")
        [[ $7 == 0 ]] && LOAD+=(--no-resume)
    fi
    return 0
}

# run_one KIND(echo|fanout|full|resumed) CONFIG SERVER ROUND PORT
run_one() {
    local kind=$1 cfg=$2 name=$3 round=$4 port=$5
    local conns=${cfg%x*} size=${cfg#*x} mode=echo scenario=$1 resume=1 json=$WORK/run.json
    case $kind in
        fanout) mode=broadcast ;;
        full) scenario=handshakes; resume=0 ;;
        resumed) scenario=handshakes ;;
    esac
    start_server "$name" "$mode" "$port"
    load_args "$scenario" "$conns" "$size" "$WARMUP_S" "$port" "$WORK/warm.json" "$resume"
    "${LOAD[@]}" >"$WORK/load.out" 2>&1 || true
    local t0 t1
    t0=$(ticks "$SERVER_PID")
    rm -f "$json"
    load_args "$scenario" "$conns" "$size" "$MEASURE_S" "$port" "$json" "$resume"
    /usr/bin/time -f '%e %U %S' -o "$WORK/time.txt" "${LOAD[@]}" >"$WORK/load.out" 2>&1 || true
    t1=$(ticks "$SERVER_PID")
    cleanup
    [[ -s $json ]] || { echo "compare_tls: no report for $kind $cfg $name" >&2; cat "$WORK/load.out" >&2; return 0; }
    local field=messages
    [[ $kind == fanout ]] && field=deliveries
    python3 - "$json" "$WORK/time.txt" "$((t1 - t0))" "$TICK_HZ" "$field" >>"$RUNS" <<EOF
import json, sys
r = json.load(open(sys.argv[1]))
wall, user, sys_s = map(float, open(sys.argv[2]).read().split()[-3:])
ticks, hz, field = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
n = r[field]
server_s = ticks / hz
errors = r["errors"]
print("\t".join(map(str, ["$kind", "$cfg", "$name", $round,
    round(n / max(r["duration_s"], 1e-9)), round(server_s * 1e6 / max(n, 1), 3),
    round(100 * server_s / wall), round(100 * (user + sys_s) / wall), errors,
    r.get("tls_handshakes_resumed", 0)])))
EOF
    tail -1 "$RUNS"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
port=$PORT_BASE
for kind in echo fanout full resumed; do
    case $kind in
        echo) cfgs=$CONFIGS ;;
        fanout) cfgs=$FANOUT_CONFIGS ;;
        *) cfgs="${HANDSHAKE_CONNS}x64" ;;
    esac
    for cfg in $cfgs; do
        for round in $(seq "$ROUNDS"); do
            for name in $SERVERS; do
                port=$((port + 1))
                run_one "$kind" "$cfg" "$name" "$round" "$port"
            done
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$RUNS" "$OUT" "$ROUNDS" "$WARMUP_S" "$MEASURE_S" "$(git rev-parse --short HEAD)" \
    "$LOAD_BEFORE" "$LOAD_AFTER" "${NOTES[*]:-}" <<'EOF'
import collections, datetime, statistics, sys
runs, out, rounds, warm, meas, commit, load_before, load_after, notes = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(runs)][1:]
by = collections.defaultdict(list)
for kind, cfg, server, _r, per_s, us, scpu, lcpu, err, resumed in rows:
    by[(kind, cfg, server)].append((float(per_s), float(us), float(scpu), float(lcpu), int(err), int(resumed)))
med = statistics.median
what = {"echo": "echo round trips/s", "fanout": "deliveries/s",
        "full": "handshakes/s, no resumption", "resumed": "handshakes/s, resumed"}
lines = [
    "# ringws over wss:// against its TLS peers",
    "",
    f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit `{commit}` by "
    f"`scripts/compare_tls.sh` ({rounds} interleaved rounds; {warm} s warm-up, {meas} s measured per run).",
    "Server on CPU 0 (one thread), `ringws-load` (one ring) on CPU 1; every TLS server on rustls 0.23 with",
    "the ring provider, TLS 1.3, a self-signed P-256 certificate. µs/op: server CPU (utime+stime, 10 ms",
    "ticks) per message, delivery or handshake over the measured invocation. Medians over the rounds.",
    f"Machine load average (1, 5, 15 min) before: {load_before}; after: {load_after} (2 cores, shared with",
    "other builds: absolute rates are noisy; compare within a row group).",
]
if notes:
    lines += ["", f"Note: {notes}"]
lines += ["",
    "| kind | conns × bytes | server | per s | server µs/op | server CPU% | load CPU% | errors | resumed |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|"]
for kind in ("echo", "fanout", "full", "resumed"):
    for cfg in dict.fromkeys(c for k, c, _ in by if k == kind):
        servers = [s for k, c, s in by if k == kind and c == cfg]
        for s in servers:
            v = by[(kind, cfg, s)]
            m = [med([x[i] for x in v]) for i in range(4)]
            lines.append(f"| {kind} ({what[kind]}) | {cfg.replace('x', ' × ')} | {s} | {m[0]:,.0f} | {m[1]:.2f} | "
                         f"{m[2]:.0f} | {m[3]:.0f} | {sum(x[4] for x in v)} | {sum(x[5] for x in v)} |")
lines += ["", "Every run (target/compare-tls/runs.tsv):", "", "```", open(runs).read().rstrip(), "```"]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
EOF
