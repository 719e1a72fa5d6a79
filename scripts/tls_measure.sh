#!/bin/bash
# Server memory per idle wss:// connection (a measurement, not a test), from the repository root after
#   cargo build --release --bin ringws --example wss_idle --example quick_client
# RSS of one worker with N idle wss connections (TLS 1.3 by default; TLS=tls12 for 1.2; each did a full
# handshake, the upgrade and one 64-byte echo) minus its RSS before them (after one connection warmed
# the per-worker pools), divided by N. The same for N plain ws:// connections on a plain server, in the
# same run, as the baseline. The machine may be shared: the figures are what this run saw.
# usage: scripts/tls_measure.sh [N]   (default 10000; loopback only)
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh
N=${1:-10000}
BIN=./target/release
ulimit -n 65536 2> /dev/null || ulimit -n 20000
certs=target/tls-measure
rm -rf "$certs"
make_tls_certs "$certs"
rss() { awk '/^Rss:/ {print $2}' "/proc/$1/smaps_rollup"; }

measure() { # measure LABEL CLIENT_CMD... : prints the per-connection bytes of the running server $SRV
    local label=$1; shift
    local fifo base with
    base=$(rss "$SRV")
    fifo=$(mktemp -u); mkfifo "$fifo"
    "$@" < "$fifo" > /tmp/ringws_tls_measure_cli.log &
    local cli=$!
    exec 3> "$fifo"
    while ! grep -q ready /tmp/ringws_tls_measure_cli.log 2> /dev/null; do
        kill -0 $cli 2> /dev/null || { echo "client died"; cat /tmp/ringws_tls_measure_cli.log; exit 1; }
        sleep 0.2
    done
    sleep 0.5
    with=$(rss "$SRV")
    echo "$label: RSS $base kB -> $with kB with $N idle connections: $(( (with - base) * 1024 / N )) B/conn"
    exec 3>&-
    wait $cli || true
    rm -f "$fifo"
    sleep 1
}

port=$(free_port)
$BIN/ringws serve --port "$port" --workers 1 --no-pin --connections-per-worker-max 12000 \
    --tls-cert "$certs/server.crt" --tls-key "$certs/server.key" > /tmp/ringws_tls_measure_srv.log 2>&1 &
SRV=$!
sleep 0.5
$BIN/examples/wss_idle 127.0.0.1:$port 1 "$certs/ca.crt" ${TLS:-} < /dev/null > /dev/null
sleep 0.3
measure "wss:// (${TLS:-tls13})" $BIN/examples/wss_idle 127.0.0.1:$port "$N" "$certs/ca.crt" ${TLS:-}
kill -TERM $SRV; wait $SRV || true

port=$(free_port)
$BIN/ringws serve --port "$port" --workers 1 --no-pin --connections-per-worker-max 12000 \
    > /tmp/ringws_tls_measure_srv.log 2>&1 &
SRV=$!
sleep 0.5
$BIN/examples/quick_client echo 127.0.0.1:$port 1 512 1 64 > /dev/null
sleep 0.3
measure "ws:// (baseline)" $BIN/examples/quick_client idle 127.0.0.1:$port "$N"
kill -TERM $SRV; wait $SRV || true
