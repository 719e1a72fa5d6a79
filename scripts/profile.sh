#!/usr/bin/env bash
# Where ringws's cycles go: syscalls, instructions and the top functions per message.
#
#   syscalls  perf stat tracepoints (syscalls:sys_enter_io_uring_enter, raw_syscalls:sys_enter,
#             context-switches; no hardware counters needed) on the server over a whole
#             `ringws-load` run, for ringws and each peer: calls per message.
#   callgrind valgrind --tool=callgrind on `ringws serve` (user-space instructions, repeatable):
#             Ir(echo run) - Ir(same connections, no messages) over the messages; the same for
#             fanout (per delivery). Top functions by self cost go to target/profile/*.top.
#             NOT in `all`: with valgrind 3.19 (Debian 12) ringws never gets to "listening on"
#             (its worker blocks in io_uring_enter holding valgrind's big lock, so the main thread
#             never runs). Kept for a valgrind that treats io_uring_enter as blocking; bounded by
#             a timeout.
#   allocs    uprobes on libc malloc/calloc/realloc/free: allocator calls per message (the
#             "no allocation per message" target), for ringws and each peer.
#   perf      perf record -e cpu-clock (software sampling, kernel included) on ringws echo:
#             the top symbols, user and kernel.
#
# Server on CPU 0, load generator on CPU 1. Usage: scripts/profile.sh [syscalls|perf|perf-fanout|allocs|allocs-fanout|callgrind|all]
# Env: CONNS=100 SIZE=20 SECONDS_RUN=4 (syscalls/perf) CG_SECONDS=6 (callgrind) FANOUT_CONNS=100
#      FANOUT_SIZE=512 SERVERS="ringws fastwebsockets tungstenite tokio-websockets" SKIP_BUILD=1
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-all}
CONNS=${CONNS:-100}
SIZE=${SIZE:-20}
SECONDS_RUN=${SECONDS_RUN:-4}
CG_SECONDS=${CG_SECONDS:-6}
FANOUT_CONNS=${FANOUT_CONNS:-100}
FANOUT_SIZE=${FANOUT_SIZE:-512}
SERVERS=${SERVERS:-"ringws fastwebsockets tungstenite tokio-websockets"}
BIN=target/release
OUTDIR=target/profile
PORT=${PORT_BASE:-19700}
mkdir -p "$OUTDIR"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --bin ringws --bin ringws-load
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

# start NAME MODE [WRAPPER...]: server on CPU 0 (optionally under a wrapper such as valgrind).
start() {
    local name=$1 mode=$2
    shift 2
    PORT=$((PORT + 1))
    local log=$OUTDIR/server.log cmd
    if [[ $name == ringws ]]; then
        cmd=("$BIN/ringws" serve --workers 1 --no-pin --mode "$mode" --port "$PORT")
    else
        cmd=("$BIN/peer-$name" --mode "$mode" --port "$PORT")
    fi
    taskset -c 0 "$@" "${cmd[@]}" >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 200); do
        grep -q "listening on" "$log" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "profile: $name did not start" >&2
    cat "$log" >&2
    exit 1
}

# load SCENARIO CONNS SIZE SECONDS JSON
load() {
    taskset -c 1 "$BIN/ringws-load" "$1" --url "ws://127.0.0.1:$PORT/" --conns "$2" --size "$3" \
        --duration "$4" --workers 1 --quiet --deadline-s 600 --out "$5" >"$OUTDIR/load.out" 2>&1 || true
}

count() { jq -r ".$1" "$2"; }

syscalls() {
    echo "== syscalls per message: echo ${CONNS} x ${SIZE} B, ${SECONDS_RUN} s"
    printf '%-18s %10s %14s %14s %14s\n' server messages enters/msg syscalls/msg ctxsw/msg
    for name in $SERVERS; do
        start "$name" echo
        load echo "$CONNS" "$SIZE" 1 "$OUTDIR/warm.json"
        perf stat -x, -o "$OUTDIR/$name.perfstat" -p "$SERVER_PID" \
            -e syscalls:sys_enter_io_uring_enter,raw_syscalls:sys_enter,context-switches &
        local perf_pid=$!
        sleep 0.2
        load echo "$CONNS" "$SIZE" "$SECONDS_RUN" "$OUTDIR/$name.syscalls.json"
        kill -INT "$perf_pid"
        wait "$perf_pid" 2>/dev/null || true
        cleanup
        local msgs
        msgs=$(count messages "$OUTDIR/$name.syscalls.json")
        awk -F, -v n="$msgs" -v s="$name" '
            /io_uring_enter/ { e = $1 } /raw_syscalls/ { a = $1 } /context-switches/ { c = $1 }
            END { printf "%-18s %10d %14.3f %14.3f %14.3f\n", s, n, e / n, a / n, c / n }' \
            "$OUTDIR/$name.perfstat"
    done
}

# allocs [MODE SCENARIO CONNS SIZE]: libc allocator calls per message on the server, counted with
# uprobes on malloc/calloc/realloc/free (added here, removed at the end), over a whole load run.
allocs() {
    local mode=${1:-echo} scen=${2:-echo} conns=${3:-$CONNS} size=${4:-$SIZE} libc
    libc=$(ldd "$BIN/ringws" | awk '/libc.so/ { print $3 }')
    local added=()
    for f in malloc calloc realloc free; do
        if ! perf probe -l 2>/dev/null | grep -q "probe_libc:$f "; then
            perf probe -q -x "$libc" --add "$f" && added+=("probe_libc:$f")
        fi
    done
    echo "== allocator calls per message ($scen ${conns} x ${size} B, ${SECONDS_RUN} s, after a 1 s warm-up)"
    printf '%-18s %10s %10s %10s %10s %10s\n' server messages malloc/msg calloc/msg realloc/msg free/msg
    for name in $SERVERS; do
        start "$name" "$mode"
        load "$scen" "$conns" "$size" 1 "$OUTDIR/warm.json"
        perf stat -x, -o "$OUTDIR/$name.allocs" -p "$SERVER_PID" \
            -e probe_libc:malloc,probe_libc:calloc,probe_libc:realloc,probe_libc:free &
        local perf_pid=$!
        sleep 0.2
        load "$scen" "$conns" "$size" "$SECONDS_RUN" "$OUTDIR/$name.allocs.json"
        kill -INT "$perf_pid"
        wait "$perf_pid" 2>/dev/null || true
        cleanup
        local n field=messages
        [[ $scen == fanout ]] && field=deliveries
        n=$(count "$field" "$OUTDIR/$name.allocs.json")
        awk -F, -v n="$n" -v s="$name" '
            /:malloc/ { m = $1 } /:calloc/ { c = $1 } /:realloc/ { r = $1 } /:free/ { f = $1 }
            END { printf "%-18s %10d %10.4f %10.4f %10.4f %10.4f\n", s, n, m / n, c / n, r / n, f / n }' \
            "$OUTDIR/$name.allocs"
    done
    for p in "${added[@]}"; do perf probe -q -d "$p" || true; done
}

# callgrind_run NAME.out MODE SCENARIO CONNS SIZE SECONDS: ringws under callgrind, one load run,
# then SIGTERM (ringws shuts down cleanly and callgrind writes its file).
callgrind_run() {
    local out=$OUTDIR/$1 mode=$2 scen=$3
    start ringws "$mode" timeout -s KILL 300 valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no
    load "$scen" "$4" "$5" "$6" "$out.json"
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

total_ir() { grep -E '^(summary|totals):' "$1" | head -1 | awk '{ print $2 }'; }

callgrind() {
    echo "== callgrind (user-space instructions of ringws serve --workers 1)"
    callgrind_run cg.connect.out echo connect "$CONNS" "$SIZE" 1
    callgrind_run cg.echo.out echo echo "$CONNS" "$SIZE" "$CG_SECONDS"
    callgrind_run cg.fconnect.out broadcast connect "$((FANOUT_CONNS + 1))" "$FANOUT_SIZE" 1
    callgrind_run cg.fanout.out broadcast fanout "$FANOUT_CONNS" "$FANOUT_SIZE" "$CG_SECONDS"
    local base echo msgs fbase fan dels
    base=$(total_ir "$OUTDIR/cg.connect.out")
    echo=$(total_ir "$OUTDIR/cg.echo.out")
    msgs=$(count messages "$OUTDIR/cg.echo.out.json")
    fbase=$(total_ir "$OUTDIR/cg.fconnect.out")
    fan=$(total_ir "$OUTDIR/cg.fanout.out")
    dels=$(count deliveries "$OUTDIR/cg.fanout.out.json")
    python3 - "$base" "$echo" "$msgs" "$fbase" "$fan" "$dels" "$CONNS" "$SIZE" "$FANOUT_CONNS" "$FANOUT_SIZE" <<'EOF'
import sys
base, echo, msgs, fbase, fan, dels = map(int, sys.argv[1:7])
c, s, fc, fs = sys.argv[7:]
print(f"echo {c} x {s} B: Ir {echo:,} - connect-only {base:,} over {msgs:,} messages = {(echo - base) / msgs:,.0f} instructions/message")
print(f"fanout {fc} x {fs} B: Ir {fan:,} - connect-only {fbase:,} over {dels:,} deliveries = {(fan - fbase) / max(dels, 1):,.0f} instructions/delivery")
EOF
    for f in echo fanout; do
        callgrind_annotate --inclusive=no "$OUTDIR/cg.$f.out" 2>/dev/null | sed -n '1,60p' >"$OUTDIR/cg.$f.top"
        echo "-- top self cost, $f (target/profile/cg.$f.top):"
        grep -E '^ *[0-9,]+ \([ 0-9.]+%\)' "$OUTDIR/cg.$f.top" | sed -n '2,16p'
    done
}

# perf_profile [MODE SCENARIO CONNS SIZE]: defaults to echo.
perf_profile() {
    local mode=${1:-echo} scen=${2:-echo} conns=${3:-$CONNS} size=${4:-$SIZE}
    echo "== perf record -e cpu-clock on ringws $mode ($scen ${conns} x ${size} B), user + kernel"
    start ringws "$mode"
    load "$scen" "$conns" "$size" 1 "$OUTDIR/warm.json"
    perf record -q -e cpu-clock -F 2999 -g -p "$SERVER_PID" -o "$OUTDIR/perf.data" &
    local perf_pid=$!
    sleep 0.2
    load "$scen" "$conns" "$size" "$SECONDS_RUN" "$OUTDIR/perf.$scen.json"
    kill -INT "$perf_pid"
    wait "$perf_pid" 2>/dev/null || true
    cleanup
    perf report -i "$OUTDIR/perf.data" --stdio --no-children --sort sym 2>/dev/null \
        | grep -E '^ +[0-9.]+%' | head -40 >"$OUTDIR/perf.$scen.top"
    head -30 "$OUTDIR/perf.$scen.top"
}

case $WHAT in
    syscalls) syscalls ;;
    callgrind) callgrind ;;
    perf) perf_profile ;;
    perf-fanout) perf_profile broadcast fanout "$FANOUT_CONNS" "$FANOUT_SIZE" ;;
    allocs) allocs ;;
    allocs-fanout) allocs broadcast fanout "$FANOUT_CONNS" "$FANOUT_SIZE" ;;
    all) syscalls; perf_profile ;;
    *) echo "usage: $0 [syscalls|callgrind|perf|all]" >&2; exit 2 ;;
esac
