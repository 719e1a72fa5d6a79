#!/usr/bin/env bash
# ringws (one worker) against the best Rust peers, side by side, on this machine.
#
# Every server runs pinned to CPU 0 (`taskset -c 0`), the load generator (one worker) to CPU 1.
# Echo configurations (connections x payload bytes) run in interleaved rounds (A B C D A B C D …)
# so that the machine's drift hits every server alike. Each run: a warm-up load (its own
# ringws-load invocation, WARMUP_S), then the measured load (MEASURE_S). Per run we record
#   - messages/s (echo round trips) from the load generator's JSON report,
#   - the server's CPU time (utime + stime from /proc/PID/stat, 10 ms ticks) over the measured
#     invocation (connect + run + close of the connections) / messages  ->  µs per message,
#   - the load generator's own CPU use (GNU time: (user + sys) / wall) -> is the client the limit?
# The medians go to a markdown table in $OUT (docs/COMPARE.md by default) with the date and
# the commit; raw rows go to target/compare/runs.tsv.
#
# Usage: scripts/compare.sh            # full: 3 rounds x (2 s warm-up + 8 s measured)
#        QUICK=1 scripts/compare.sh    # quick: 2 rounds x (1 s warm-up + 4 s measured)
# Knobs (env): ROUNDS WARMUP_S MEASURE_S CONFIGS="100x20 100x512 500x1024 500x16384"
#              SERVERS="ringws fastwebsockets tungstenite tokio-websockets"
#                (an entry "ringws:/path/to/ringws" runs another ringws build: A/B of two engines)
#              FANOUT_CONFIGS="500x512" (broadcast mode + `ringws-load fanout`; "" to skip)
#              OUT=docs/COMPARE.md  PORT_BASE=19300  SKIP_BUILD=1
#              BENCH_OUT=docs/BENCHMARKS.md (the summary tables replace the part of that file
#                between "<!-- compare.sh begin -->" and "<!-- compare.sh end -->"; "" to skip)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${QUICK:-0}" == 1 ]]; then
    ROUNDS=${ROUNDS:-2} WARMUP_S=${WARMUP_S:-1} MEASURE_S=${MEASURE_S:-4}
fi
ROUNDS=${ROUNDS:-3}
WARMUP_S=${WARMUP_S:-2}
MEASURE_S=${MEASURE_S:-8}
CONFIGS=${CONFIGS:-"100x20 100x512 500x1024 500x16384"}
FANOUT_CONFIGS=${FANOUT_CONFIGS-"500x512"}
SERVERS=${SERVERS:-"ringws fastwebsockets tungstenite tokio-websockets"}
OUT=${OUT:-docs/COMPARE.md}
BENCH_OUT=${BENCH_OUT-docs/BENCHMARKS.md}
PORT_BASE=${PORT_BASE:-19300}
BIN=target/release
WORK=target/compare
TICK_HZ=$(getconf CLK_TCK)

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bin ringws --bin ringws-load
    cargo build --release -p ringws-peers
fi
mkdir -p "$WORK"
RUNS=$WORK/runs.tsv
printf 'kind\tconfig\tserver\tround\tmsgs_per_s\tserver_us_per_msg\tserver_cpu_pct\tload_cpu_pct\terrors\n' >"$RUNS"

SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# start_server NAME MODE PORT: runs it on CPU 0, waits for its "listening on" line.
start_server() {
    local name=$1 mode=$2 port=$3 log=$WORK/server.log
    case $name in
        ringws) taskset -c 0 "$BIN/ringws" serve --workers 1 --no-pin --mode "$mode" --port "$port" >"$log" 2>&1 & ;;
        # Another ringws build, for A/B runs: SERVERS="ringws ringws:/path/to/other/ringws".
        ringws:*) taskset -c 0 "${name#ringws:}" serve --workers 1 --no-pin --mode "$mode" --port "$port" >"$log" 2>&1 & ;;
        *) taskset -c 0 "$BIN/peer-$name" --mode "$mode" --port "$port" >"$log" 2>&1 & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 400); do
        grep -q "listening on" "$log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "compare: $name did not start:" >&2
    cat "$log" >&2
    exit 1
}

stop_server() {
    cleanup
    SERVER_PID=""
}

# load SCENARIO CONNS SIZE DURATION PORT JSON: ringws-load on CPU 1, one worker.
load() {
    taskset -c 1 "$BIN/ringws-load" "$1" --url "ws://127.0.0.1:$5/" --conns "$2" --size "$3" \
        --duration "$4" --workers 1 --quiet --out "$6" >"$WORK/load.out" 2>&1 || true
}

# run_one KIND(echo|fanout) CONFIG SERVER ROUND PORT
run_one() {
    local kind=$1 cfg=$2 name=$3 round=$4 port=$5
    local conns=${cfg%x*} size=${cfg#*x} mode=echo json=$WORK/run.json
    [[ $kind == fanout ]] && mode=broadcast
    start_server "$name" "$mode" "$port"
    load "$kind" "$conns" "$size" "$WARMUP_S" "$port" "$WORK/warm.json"
    local t0 t1
    t0=$(ticks "$SERVER_PID")
    rm -f "$json"
    /usr/bin/time -f '%e %U %S' -o "$WORK/time.txt" \
        taskset -c 1 "$BIN/ringws-load" "$kind" --url "ws://127.0.0.1:$port/" --conns "$conns" \
        --size "$size" --duration "$MEASURE_S" --workers 1 --quiet --out "$json" \
        >"$WORK/load.out" 2>&1 || true
    t1=$(ticks "$SERVER_PID")
    stop_server
    [[ -s $json ]] || { echo "compare: no report for $kind $cfg $name" >&2; cat "$WORK/load.out" >&2; return 0; }
    local field=messages
    [[ $kind == fanout ]] && field=deliveries
    python3 - "$json" "$WORK/time.txt" "$((t1 - t0))" "$TICK_HZ" "$field" >>"$RUNS" <<EOF
import json, sys
r = json.load(open(sys.argv[1]))
wall, user, sys_s = map(float, open(sys.argv[2]).read().split()[-3:])
ticks, hz, field = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
n = r[field]
server_s = ticks / hz
errors = r["errors"] if isinstance(r["errors"], int) else sum(r["errors"].values())
print("\t".join(map(str, ["$kind", "$cfg", "$name", $round,
    round(n / r["duration_s"]), round(server_s * 1e6 / max(n, 1), 3),
    round(100 * server_s / wall), round(100 * (user + sys_s) / wall), errors])))
EOF
    tail -1 "$RUNS"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
port=$PORT_BASE
for kind in echo fanout; do
    cfgs=$CONFIGS
    [[ $kind == fanout ]] && cfgs=$FANOUT_CONFIGS
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
    "$LOAD_BEFORE" "$LOAD_AFTER" "$BENCH_OUT" <<'EOF'
import collections, datetime, statistics, sys
runs, out, rounds, warm, meas, commit, load_before, load_after, bench_out = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(runs)][1:]
by = collections.defaultdict(list)
for kind, cfg, server, _r, mps, us, scpu, lcpu, err in rows:
    by[(kind, cfg, server)].append((float(mps), float(us), float(scpu), float(lcpu), int(err)))
med = lambda xs: statistics.median(xs)
lines = [
    "# ringws against its peers",
    "",
    f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC at commit `{commit}` by "
    f"`scripts/compare.sh` ({rounds} interleaved rounds; {warm} s warm-up, {meas} s measured per run).",
    "Server on CPU 0, `ringws-load` (1 worker) on CPU 1. msgs/s: echo round trips (fanout: deliveries)",
    "per second; µs/msg: server CPU (utime+stime) per message (fanout: per delivery) over the measured",
    "invocation; CPU%: share of one core over the measured invocation. Medians over the rounds.",
    f"Machine load average (1, 5, 15 min) before: {load_before}; after: {load_after} (2 cores: above ~2",
    "other processes compete with the server and the client, and msgs/s says more about them than us).",
    "",
    "| kind | conns × bytes | server | msgs/s | server µs/msg | server CPU% | load CPU% | errors |",
    "|---|---|---|---:|---:|---:|---:|---:|",
]
ratios = []
for kind in ("echo", "fanout"):
    cfgs = list(dict.fromkeys(c for k, c, _ in by if k == kind))
    for cfg in cfgs:
        servers = [s for k, c, s in by if k == kind and c == cfg]
        m = {}
        for s in servers:
            v = by[(kind, cfg, s)]
            m[s] = [med([x[i] for x in v]) for i in range(4)] + [sum(x[4] for x in v)]
            lines.append(f"| {kind} | {cfg.replace('x', ' × ')} | {s} | {m[s][0]:,.0f} | {m[s][1]:.2f} | "
                         f"{m[s][2]:.0f} | {m[s][3]:.0f} | {m[s][4]} |")
        peers = [s for s in servers if s != "ringws"]
        if "ringws" in m and peers:
            best_rate = max(peers, key=lambda s: m[s][0])
            best_cpu = min(peers, key=lambda s: m[s][1])
            ratios.append((kind, cfg, m["ringws"][0] / m[best_rate][0], best_rate,
                           m[best_cpu][1] / m["ringws"][1], best_cpu))
lines += ["", "Ratios (≥ 1 means ringws is ahead):", "",
          "| kind | conns × bytes | msgs/s ringws / best peer | server CPU per msg best peer / ringws |",
          "|---|---|---:|---:|"]
for kind, cfg, r_rate, p_rate, r_cpu, p_cpu in ratios:
    lines.append(f"| {kind} | {cfg.replace('x', ' × ')} | {r_rate:.2f} ({p_rate}) | {r_cpu:.2f} ({p_cpu}) |")
summary = lines[2:]
lines += ["", "Every run (target/compare/runs.tsv):", "", "```", open(runs).read().rstrip(), "```"]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
if bench_out:
    begin, end = "<!-- compare.sh begin -->", "<!-- compare.sh end -->"
    doc = open(bench_out).read()
    block = begin + "\n" + "\n".join(summary) + f"\n\nEvery run: `{out}`.\n" + end
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    open(bench_out, "w").write(doc)
EOF
