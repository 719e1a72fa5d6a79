#!/usr/bin/env bash
# One-command benchmark of ringws over loopback: builds in release, checks the limits it needs,
# starts `ringws serve` (pinned, in the right mode), runs the scenarios with `ringws-load`, prints
# the reports, and stops everything it started, even on failure or Ctrl-C.
#
#   scripts/loadtest.sh                          # echo 100 x 512 B, then fanout to 10,000 (< 3 min)
#   SCENARIO=fanout CONNS=100000 scripts/loadtest.sh
#   SCENARIO=fanout CONNS=1000000 BROADCASTS=10 scripts/loadtest.sh   # the million (see docs/TUNING.md)
#
# Environment (or --name value flags, same names in lower case: --conns 1000):
#   SCENARIO    all | echo | fanout | connect | idle | handshakes   [all = echo then fanout]
#   CONNS       connections (fanout: subscribers)  [echo, handshakes 100; others 10000]
#   SIZE        payload bytes                             [echo 512, fanout 64]
#   DURATION    seconds of each measured phase            [10]
#   WORKERS     server workers                            [max(ceil(CONNS / 19000), cores)]
#   LOAD_WORKERS  load-generator rings                    [ceil((CONNS + 1) / 19990)]
#   OUT         report directory                          [reports/]
#   BROADCASTS  fanout: stop after this many broadcasts   [none: run DURATION]
#   INFLIGHT    fanout: broadcasts in flight              [8; 1 with BROADCASTS]
#   INTERVAL_MS fanout: one broadcast every T ms instead of back to back
#   GRACE_MS    fanout: wait for the last deliveries      [max(5000, CONNS / 30)]
#   MODE        fanout through the server's broadcast or pubsub mode   [broadcast]
#   SERVER_CPUS / LOAD_CPUS  taskset lists                [0 / 1 on 2+ cores]
#   SERVER_ARGS extra flags for `ringws serve` (e.g. --no-deflate)
#   DEFLATE=1   every connection offers permessage-deflate (`ringws-load --deflate`; flag form:
#               --deflate); JSON-like payloads, echo sends compressed      [off]
#   TLS=1       over wss://: a self-signed certificate for 127.0.0.1/localhost is made in
#               $OUT/tls/ (openssl), the server gets --tls-cert/--tls-key, the load generator
#               trusts that certificate (--tls-ca; flag form: --tls)               [off]
#   NO_BUILD=1  skip `cargo build --release`
#   NETNS=1     run server and load generator in a fresh network namespace (root; its loopback,
#               and a larger TCP hash table if net.ipv4.tcp_child_ehash_entries was raised first)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h|--help|help) sed -n '2,32p' "$0"; exit 0 ;;
        --deflate) k=--deflate; v=1; shift ;;
        --tls) k=--tls; v=1; shift ;;
        --*=*) k=${1%%=*}; v=${1#*=}; shift ;;
        --*) k=$1; v=${2:?"$1 needs a value"}; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    k=${k#--}; k=${k^^}; k=${k//-/_}
    printf -v "$k" '%s' "$v"
    export "${k?}"
done

SCENARIO=${SCENARIO:-all}
DURATION=${DURATION:-10}
OUT=${OUT:-reports}
CORES=$(nproc)
SERVER_PID=""
LOAD_PID=""
FAILED=0

cleanup() {
    local pid
    for pid in $LOAD_PID $SERVER_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.3; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    LOAD_PID=""
    SERVER_PID=""
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; cleanup; exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# --- limits ----------------------------------------------------------------------------------
read_sysctl() { cat "/proc/sys/$1" 2>/dev/null || echo 0; }

check_limits() {
    local conns=$1 server_workers=$2 ok=1
    local nofile; nofile=$(ulimit -n)
    if [[ $nofile != unlimited && $nofile -lt 19100 ]]; then
        warn "ulimit -n is $nofile: a ring's fixed-file table (connections per worker) is capped by it;"
        warn "  raise it (ulimit -n 20000, or LimitNOFILE= / limits.conf), or expect more, smaller workers"
        ok=0
    fi
    local range lo hi ports
    range=$(read_sysctl net/ipv4/ip_local_port_range); lo=${range%%[[:space:]]*}; hi=${range##*[[:space:]]}
    ports=$((hi - lo + 1))
    local ips_needed=$(( (conns + ports * 2 / 5 - 1) / (ports * 2 / 5) ))
    if [[ $ips_needed -gt 254 ]]; then
        warn "ip_local_port_range is $lo-$hi ($ports ports per source address): $conns connections need"
        warn "  $ips_needed addresses of 127.0.0.0/24; widen it: sysctl -w net.ipv4.ip_local_port_range='1024 65535'"
        ok=0
    fi
    local somaxconn; somaxconn=$(read_sysctl net/core/somaxconn)
    if [[ $somaxconn -lt 4096 ]]; then
        warn "net.core.somaxconn is $somaxconn: connection bursts overflow the accept queues;"
        warn "  sysctl -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535"
        ok=0
    fi
    # Two sockets per connection on loopback, a few KiB of kernel memory each, plus both
    # processes' user space: budget 10 KiB per connection.
    local avail_kb need_kb
    avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
    need_kb=$(( conns * 10 + 512 * 1024 ))
    if [[ $need_kb -gt $avail_kb ]]; then
        warn "about $((need_kb / 1024)) MiB needed for $conns connections, $((avail_kb / 1024)) MiB available"
        ok=0
    fi
    local tcp_mem_max # global: not visible inside a child network namespace
    tcp_mem_max=$(awk '{print $3}' /proc/sys/net/ipv4/tcp_mem 2>/dev/null || echo 0)
    if [[ $tcp_mem_max -gt 0 && $(( tcp_mem_max * 4 )) -lt $(( conns * 8 )) ]]; then   # pages of 4 KiB vs ~4 KiB/conn
        warn "net.ipv4.tcp_mem max is $tcp_mem_max pages: too little for $conns connections' buffers;"
        warn "  sysctl -w net.ipv4.tcp_mem='$((conns * 2)) $((conns * 3)) $((conns * 4))'"
        ok=0
    fi
    if [[ $server_workers -gt 1 && $conns -gt $((server_workers * 19000)) ]]; then
        warn "$conns connections need more than $server_workers server workers of 19,000"
        ok=0
    fi
    [[ $ok == 1 ]] && echo "limits: ok for $conns connections (fds $nofile, ports $lo-$hi, somaxconn $somaxconn)"
    return 0
}

# --- TLS ---------------------------------------------------------------------------------------
# A self-signed certificate (CA:FALSE, so that it can be trusted as itself with --tls-ca) made with
# Debian's openssl CLI: no build step, and the script stays independent of the crates under test.
TLS_DIR=""
make_certificate() {
    TLS_DIR=$OUT/tls
    mkdir -p "$TLS_DIR"
    [[ -s $TLS_DIR/cert.pem && -s $TLS_DIR/key.pem ]] && return 0
    command -v openssl >/dev/null || die "TLS=1 needs the openssl CLI (apt-get install openssl)"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null \
        || die "openssl could not make a certificate"
    echo "tls: self-signed certificate $TLS_DIR/cert.pem"
}

# --- server ----------------------------------------------------------------------------------
cpu_list() { # default CPU lists: server on 0, load generator on 1 (both on 0 with one core)
    if [[ $CORES -ge 2 ]]; then echo "${SERVER_CPUS:-0} ${LOAD_CPUS:-1}"; else echo "0 0"; fi
}

start_server() { # mode conns -> sets SERVER_PID, URL
    local mode=$1 conns=$2 workers extra=() log="$OUT/server-$mode.log"
    workers=${WORKERS:-$(( (conns + 18999) / 19000 ))}
    [[ -n ${WORKERS:-} || $workers -ge $CORES ]] || workers=$CORES
    if [[ $conns -ge 50000 ]]; then
        # Many workers on few cores: smaller receive pools keep user space per connection low.
        extra=(--recv-buffers 256 --recv-buffer-bytes 4096)
    fi
    if [[ $conns -ge 100000 ]]; then
        # Connections opened together fall due for the heartbeat together: a wave of pings
        # that stalls a small machine (docs/TUNING.md). The benchmark runs without it.
        extra+=(--ping-interval-ms 600000)
    fi
    [[ ${TLS:-0} == 1 ]] && extra+=(--tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem")
    # shellcheck disable=SC2206 # SERVER_ARGS is a list of extra flags on purpose
    extra+=(${SERVER_ARGS:-})
    read -r scpu _ < <(cpu_list)
    if [[ $workers -gt $CORES && -z ${SERVER_CPUS:-} ]]; then
        # More rings than cores (the fixed-file cap forces it): let the scheduler spread them;
        # one pinned core starves them whenever anything else runs there.
        scpu=0-$((CORES - 1))
    fi
    check_limits "$conns" "$workers"
    : >"$log"
    say "server: ringws serve --mode $mode --workers $workers (CPUs $scpu)"
    taskset -c "$scpu" "$ROOT/target/release/ringws" serve --addr 127.0.0.1 --port 0 \
        --workers "$workers" --mode "$mode" --no-pin --connections-per-worker-max 19000 \
        "${extra[@]}" >"$log" 2>&1 &
    SERVER_PID=$!
    URL=""
    for _ in $(seq 1 100); do
        URL=$(sed -n 's/^listening on \(wss*:\/\/[0-9.:]*\).*/\1\//p' "$log" 2>/dev/null | head -1 || true)
        [[ -n $URL ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; die "server exited"; }
        sleep 0.1
    done
    [[ -n $URL ]] || die "server did not report its address (see $log)"
    [[ $URL == ws://127.* || $URL == wss://127.* ]] || die "refusing a non-loopback target: $URL"
    if [[ ${TLS:-0} == 1 ]]; then
        # The server may print ws:// for its listener; the load generator must speak TLS to it.
        URL=wss://${URL#*://}
    fi
}

stop_server() {
    cleanup
}

# --- one scenario ----------------------------------------------------------------------------
run_scenario() { # scenario
    local sc=$1 mode=echo conns size args=()
    case $sc in
        echo) conns=${CONNS:-100}; size=${SIZE:-512} ;;
        fanout) conns=${CONNS:-10000}; size=${SIZE:-64}; mode=${MODE:-broadcast} ;;
        connect|idle) conns=${CONNS:-10000}; size=${SIZE:-64} ;;
        handshakes) conns=${CONNS:-100}; size=${SIZE:-64} ;;
        *) die "unknown scenario $sc (all, echo, fanout, connect, idle, handshakes)" ;;
    esac
    start_server "$mode" "$conns"
    read -r _ lcpu < <(cpu_list)
    [[ $conns -le $(( CORES * 19990 )) || -n ${LOAD_CPUS:-} ]] || lcpu=$(seq -s, 0 $((CORES - 1)))
    local out="$OUT/$sc-$conns.json"
    args=("$sc" --url "$URL" --conns "$conns" --size "$size" --duration "$DURATION"
          --out "$out" --server-pid "$SERVER_PID" --pin-cpus "$lcpu")
    [[ -n ${LOAD_WORKERS:-} ]] && args+=(--workers "$LOAD_WORKERS")
    [[ ${DEFLATE:-0} == 1 ]] && args+=(--deflate)
    [[ ${TLS:-0} == 1 ]] && args+=(--tls-ca "$TLS_DIR/cert.pem")
    if [[ $sc == fanout ]]; then
        if [[ -n ${BROADCASTS:-} ]]; then
            args+=(--broadcasts "$BROADCASTS" --inflight "${INFLIGHT:-1}")
        else
            args+=(--inflight "${INFLIGHT:-8}")
        fi
        [[ -n ${INTERVAL_MS:-} ]] && args+=(--interval-ms "$INTERVAL_MS")
        args+=(--mode "$mode")
        # Time for the last broadcast to reach everyone: ~10 s per 10^6 subscribers here.
        local grace=$(( conns / 30 )); [[ $grace -ge 5000 ]] || grace=5000
        args+=(--grace-ms "${GRACE_MS:-$grace}")
    fi
    # The load generator stops by itself (its own deadline); `timeout` is the backstop.
    local limit=$(( DURATION * 3 + conns / 2000 + 120 ))
    say "load: ringws-load ${args[*]}"
    set +e
    timeout --signal=INT --kill-after=10 "$limit" "$ROOT/target/release/ringws-load" "${args[@]}" \
        --deadline-s $((limit - 5)) &
    LOAD_PID=$!
    wait "$LOAD_PID"
    local rc=$?
    set -e
    LOAD_PID=""
    stop_server
    if [[ $rc -ne 0 ]]; then
        warn "$sc: ringws-load exited with $rc (errors in the report: $out)"
        FAILED=1
    fi
    SUMMARY+=("$out")
}

summary() {
    say "summary"
    printf '%-8s %9s %7s %13s %14s %10s %10s %13s %7s %12s\n' scenario conns bytes msgs/s deliveries/s \
        p50_us p99_us complete_p99 errors server_rss
    local f
    for f in "${SUMMARY[@]}"; do
        [[ -f $f ]] || continue
        v() { sed -n "s/^  \"$1\": \\(.*\\),\$/\\1/p" "$f" | tr -d '"' | head -1; }
        printf '%-8s %9s %7s %13s %14s %10s %10s %13s %7s %12s\n' "$(v scenario)" "$(v connections)" \
            "$(v payload_bytes)" "$(v messages_per_s)" "$(v deliveries_per_s)" "$(v latency_p50_us)" \
            "$(v latency_p99_us)" "$(v fanout_complete_p99_ms)ms" "$(v errors)" "$(v server_rss_bytes)"
        if [[ ${TLS:-0} == 1 ]]; then
            printf '         tls: handshakes full %s, resumed %s\n' "$(v tls_handshakes_full)" "$(v tls_handshakes_resumed)"
        fi
        if [[ ${DEFLATE:-0} == 1 ]]; then
            printf '         deflate: %s of %s agreed, %s declined; compressed received %s, sent %s; ratio %s, %s wire B/msg\n' \
                "$(v deflate_agreed)" "$(v connected)" "$(v deflate_declined)" "$(v messages_compressed_received)" \
                "$(v messages_compressed_sent)" "$(v compression_ratio)" "$(v wire_bytes_per_message)"
        fi
    done
    echo "reports and charts (.svg) in $OUT/"
}

# --- main ------------------------------------------------------------------------------------
mkdir -p "$OUT"
if [[ -z ${NO_BUILD:-} ]]; then
    say "build (release)"
    cargo build --release --bin ringws --bin ringws-load
fi
if [[ ${NETNS:-} == 1 && -z ${RINGWS_IN_NETNS:-} ]]; then
    say "entering a new network namespace (tcp_child_ehash_entries=$(read_sysctl net/ipv4/tcp_child_ehash_entries))"
    trap - EXIT
    exec unshare -n env NO_BUILD=1 RINGWS_IN_NETNS=1 bash -c 'ip link set lo up && exec "$0" "$@"' "$0" "$@"
fi
[[ ${TLS:-0} == 1 ]] && make_certificate
SUMMARY=()
case $SCENARIO in
    all) run_scenario echo; run_scenario fanout ;;
    *) for sc in ${SCENARIO//,/ }; do run_scenario "$sc"; done ;;
esac
summary
exit $FAILED
