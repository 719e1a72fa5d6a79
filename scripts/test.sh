#!/usr/bin/env bash
# The tests, on a fresh machine: installs what they start themselves (Debian's redis-server, for
# tests/broker_redis.rs and tests/history_redis.rs) when it is missing, then runs
# `cargo test --release` with any arguments given.
# usage: scripts/test.sh [cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server > /dev/null; then
    echo "test.sh: installing redis-server (the broker and history tests start their own)" >&2
    if [ "$(id -u)" = 0 ]; then sudo_=(); else sudo_=(sudo -n); fi
    DEBIAN_FRONTEND=noninteractive "${sudo_[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_[@]}" apt-get install -y -qq --no-install-recommends redis-server
fi
exec cargo test --release "$@"
