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
rss() { awk '/VmRSS/ {print $2}' /proc/$SRV/status; }
echo "fresh server: $(rss) kB"
taskset -c 1 $BIN/examples/quick_client echo 127.0.0.1:$PORT 1 512 1 64 > /dev/null
sleep 0.3
BASE=$(rss)
echo "baseline after warm-up, no connections: $BASE kB"
sleep 100000 &
HOLD=$!
taskset -c 1 $BIN/examples/quick_client idle 127.0.0.1:$PORT 10000 < <(wait $HOLD) > /tmp/ringws_measure_cli.log &
CLI=$!
while ! grep -q ready /tmp/ringws_measure_cli.log 2>/dev/null; do sleep 0.2; done
sleep 0.5
WITH=$(rss)
echo "with 10000 idle open connections: $WITH kB"
echo "RSS per idle open connection: $(( (WITH - BASE) * 1024 / 10000 )) bytes"
kill $CLI $HOLD 2> /dev/null
sleep 1
for depth in 1 16; do
    taskset -c 1 $BIN/examples/quick_client echo 127.0.0.1:$PORT 100 512 10 $depth
done
kill -TERM $SRV
wait $SRV
echo "server exit status $?"
