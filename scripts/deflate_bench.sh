#!/usr/bin/env bash
# permessage-deflate benchmarks (not tests): fanout with compression on and off, and the server's
# memory per idle connection with deflate agreed.
#
# Fanout: `ringws serve --mode broadcast --workers 1` pinned to CPU 0, `ringws-load fanout`
# (one ring) pinned to CPU 1, a fresh server per run. Rounds are interleaved (every config and
# variant once per round) so the machine's drift hits them alike. Variants:
#   plain    the client does not offer deflate (server default: it would agree)
#   deflate  the client offers it (--deflate: JSON-like payloads), the server agrees
#   control  the client offers it, the server runs with --no-deflate and declines
# Per run, from the load generator's JSON report: deliveries/s, server CPU µs per delivery
# (utime + stime from /proc/PID/stat over the run phase), broadcast completion p99, wire bytes
# received per delivery, the load generator's own CPU use over the run phase (100 % = its core:
# then the client, not the server, is the limit), and whether every subscriber agreed.
#
# Memory: a fresh server, one short echo to warm the per-worker pools (and, with --deflate, the
# worker's deflater and inflater), then RSS (smaps_rollup) with none and with CONNS_IDLE idle
# OPEN connections from `ringws-load idle`; (with - without) / CONNS_IDLE.
#
# Usage: scripts/deflate_bench.sh        (about 8 minutes on 2 cores)
# Knobs: ROUNDS=3 DURATION=5 CONFIGS="2000x512 2000x4096 10000x512 10000x4096" INFLIGHT=8
#        VARIANTS="plain deflate control" CONNS_IDLE=10000 SKIP_BUILD=1 OUT=target/deflate_bench
#        INTERVAL_MS=T (paced: one broadcast every T ms instead of INFLIGHT back to back, so
#        every variant runs at the same delivery rate) SKIP_MEMORY=1
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONFIGS=${CONFIGS:-"2000x512 2000x4096 10000x512 10000x4096"}
VARIANTS=${VARIANTS:-"plain deflate control"}
INFLIGHT=${INFLIGHT:-8}
CONNS_IDLE=${CONNS_IDLE:-10000}
OUT=${OUT:-target/deflate_bench}
BIN=target/release

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bin ringws --bin ringws-load
fi
mkdir -p "$OUT"

# shellcheck source=scripts/lib.sh
source scripts/lib.sh
trap stop_server EXIT INT TERM

# serve FLAGS...: `ringws serve` on CPU 0 (lib.sh's start_server); sets SERVER_MAIN_PID and URL.
serve() {
    start_server "$OUT/server.log" taskset -c 0 -- --workers 1 --no-pin "$@" >/dev/null
    URL=$SERVER_URL/
}

# --- fanout ----------------------------------------------------------------------------------
RUNS=$OUT/fanout.tsv
printf 'round\tconfig\tvariant\tdeliveries_per_s\tserver_us_per_delivery\tcomplete_p99_ms\twire_bytes_per_delivery\tload_cpu_pct\tagreed\tconnected\terrors\n' >"$RUNS"

fanout_run() { # round config variant
    local round=$1 cfg=$2 variant=$3 conns=${2%x*} size=${2#*x} json=$OUT/run.json
    local server_flags=(--mode broadcast) load_flags=()
    [[ $variant == control ]] && server_flags+=(--no-deflate)
    [[ $variant != plain ]] && load_flags+=(--deflate)
    [[ -n ${INTERVAL_MS:-} ]] && load_flags+=(--interval-ms "$INTERVAL_MS")
    serve "${server_flags[@]}"
    rm -f "$json"
    taskset -c 1 "$BIN/ringws-load" fanout --url "$URL" --conns "$conns" --size "$size" \
        --duration "$DURATION" --inflight "$INFLIGHT" --workers 1 --grace-ms 20000 \
        --server-pid "$SERVER_MAIN_PID" --quiet --out "$json" "${load_flags[@]}" >"$OUT/load-$round-$cfg-$variant.out" 2>&1 || true
    stop_server
    [[ -s $json ]] || { echo "no report for $cfg $variant" >&2; cat "$OUT/load-$round-$cfg-$variant.out" >&2; return 0; }
    cp "$json" "$OUT/run-$round-$cfg-$variant.json"
    python3 - "$json" "$round" "$cfg" "$variant" >>"$RUNS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
n = max(r["deliveries"], 1)
print("\t".join(map(str, [sys.argv[2], sys.argv[3], sys.argv[4], round(r["deliveries_per_s"]),
    round(r["server_cpu_us_per_message"], 3), r["fanout_complete_p99_ms"],
    round(r["wire_bytes_received"] / n, 1),
    round(100 * r["client_cpu_run_s"] / max(r["duration_s"], 1e-9)), r["deflate_agreed"], r["connected"], r["errors"]])))
EOF
    tail -1 "$RUNS"
}

for round in $(seq "$ROUNDS"); do
    for cfg in $CONFIGS; do
        for variant in $VARIANTS; do
            fanout_run "$round" "$cfg" "$variant"
        done
    done
done

# --- idle memory -----------------------------------------------------------------------------
MEM=$OUT/memory.tsv
printf 'round\tvariant\tbaseline_kb\twith_idle_kb\tbytes_per_conn\tdeflate_connections\n' >"$MEM"
rss_kb() { awk '/^Rss:/ {print $2}' "/proc/$SERVER_MAIN_PID/smaps_rollup"; }
metric() { curl -s "${URL/ws:/http:}metrics" | awk -v m="$1" '$1 == m {print $2}'; }

memory_run() { # round variant(plain|deflate)
    local round=$1 variant=$2 flags=()
    [[ $variant == deflate ]] && flags+=(--deflate)
    serve --mode echo
    taskset -c 1 "$BIN/ringws-load" echo --url "$URL" --conns 1 --size 512 --duration 0.3 \
        --quiet "${flags[@]}" >/dev/null 2>&1
    sleep 0.3
    local base with open=0 agreed
    base=$(rss_kb)
    taskset -c 1 "$BIN/ringws-load" idle --url "$URL" --conns "$CONNS_IDLE" --duration 4 \
        --workers 1 --quiet "${flags[@]}" >"$OUT/load.out" 2>&1 &
    local load=$!
    for _ in $(seq 300); do
        open=$(metric 'ringws_connections{state="open"}')
        [[ ${open:-0} -ge $CONNS_IDLE ]] && break
        sleep 0.1
    done
    sleep 0.5
    with=$(rss_kb)
    agreed=$(metric ringws_deflate_connections)
    wait "$load" || true
    stop_server
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$variant" "$base" "$with" \
        "$(( (with - base) * 1024 / CONNS_IDLE ))" "$agreed" | tee -a "$MEM"
}

for round in $(seq "$ROUNDS"); do
    [[ ${SKIP_MEMORY:-0} == 1 ]] && break
    for variant in plain deflate; do
        memory_run "$round" "$variant"
    done
done

# --- medians ---------------------------------------------------------------------------------
python3 - "$RUNS" "$MEM" <<'EOF'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
keys = ["deliveries_per_s", "server_us_per_delivery", "complete_p99_ms", "wire_bytes_per_delivery",
        "load_cpu_pct"]
print("\nconfig\tvariant\t" + "\t".join(keys) + "\tagreed/connected\terrors")
for cfg in dict.fromkeys(r["config"] for r in rows):
    for var in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["config"] == cfg and r["variant"] == var]
        if not rs:
            continue
        med = [st.median(float(r[k]) for r in rs) for k in keys]
        agreed = "/".join(sorted({f'{r["agreed"]}/{r["connected"]}' for r in rs}))
        errors = sum(int(float(r["errors"])) for r in rs)
        print(f"{cfg}\t{var}\t" + "\t".join(f"{m:g}" for m in med) + f"\t{agreed}\t{errors}")
mem = list(csv.DictReader(open(sys.argv[2]), delimiter="\t"))
for var in ("plain", "deflate"):
    v = [int(r["bytes_per_conn"]) for r in mem if r["variant"] == var]
    if v:
        print(f"idle memory {var}: median {st.median(v)} B/conn (runs {v})")
EOF
