#!/bin/bash
# Engine measurements (not tests), from the repository root after
#   cargo build --release --bin ringws --example quick_client
# 1. RSS per idle OPEN connection: server RSS with 10k idle connections minus its RSS with none
#    (after one connection warmed the fixed per-worker pools), divided by 10k.
# 2. Echo messages/s, one worker pinned to core 0, 100 connections x 512 B, client on core 1.
set -u
BIN=./target/release
PORT=${PORT:-9102}
$BIN/ringws serve --port "$PORT" --workers 1 > /tmp/ringws_measure_srv.log 2>&1 &
SRV=$!
sleep 0.5
# smaps_rollup is exact (VmRSS in status is a batched per-CPU counter).
rss() { awk '/^Rss:/ {print $2}' /proc/$SRV/smaps_rollup; }
echo "fresh server: $(rss) kB"
taskset -c 1 $BIN/examples/quick_client echo 127.0.0.1:$PORT 1 512 1 64 > /dev/null
sleep 0.3
BASE=$(rss)
echo "baseline after warm-up, no connections: $BASE kB"
# The client holds its connections until its stdin (a FIFO we keep open) closes.
FIFO=$(mktemp -u)
mkfifo "$FIFO"
taskset -c 1 $BIN/examples/quick_client idle 127.0.0.1:$PORT 10000 < "$FIFO" > /tmp/ringws_measure_cli.log &
CLI=$!
exec 3> "$FIFO"
while ! grep -q ready /tmp/ringws_measure_cli.log 2>/dev/null; do sleep 0.2; done
sleep 0.5
WITH=$(rss)
echo "with 10000 idle open connections: $WITH kB"
curl -s http://127.0.0.1:$PORT/metrics | grep -E "^ringws_(connections|fixed_files|slab)"
echo "RSS per idle open connection: $(( (WITH - BASE) * 1024 / 10000 )) bytes"
exec 3>&-
wait $CLI
rm -f "$FIFO"
sleep 1
for depth in 1 16; do
    taskset -c 1 $BIN/examples/quick_client echo 127.0.0.1:$PORT 100 512 10 $depth
done
kill -TERM $SRV
wait $SRV
echo "server exit status $?"
