#!/usr/bin/env bash
# Proves that `ringws serve` makes no epoll_* system call: runs it under `strace -f`, drives traffic through
# it with the Python client suite (tests/clients/python_client.py echo), stops it with SIGTERM, then reads
# the trace.
#
# usage: scripts/no_epoll.sh
#
# Fails if any epoll_* call appears in the trace, if the traffic failed, or if the trace holds no
# io_uring_enter call at all (then the trace did not see the server work, and proves nothing).
# Prints the number of io_uring_enter calls seen. The trace is kept in target/no-epoll.strace.
#
# Environment: RINGWS_SERVER_CMD, RINGWS_PYTHON, RINGWS_START_TIMEOUT_S (see scripts/lib.sh).
# Needs strace (Debian: apt-get install strace).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

TRACE=$RINGWS_ROOT/target/no-epoll.strace
# The regular expression selects every epoll_* call (epoll_create, epoll_create1, epoll_ctl, epoll_wait,
# epoll_pwait, epoll_pwait2 and any later one); io_uring_* are traced as evidence that the trace works.
# --seccomp-bpf stops the server only on the traced calls, so the rest runs at full speed.
STRACE=(strace -f --seccomp-bpf -qq -o "$TRACE" -e 'trace=/^epoll_.*,/^io_uring_.*,%process')

# count_calls REGEX: the number of calls whose name matches REGEX in the trace (a call interrupted and
# resumed counts once: only its starting line has `name(`).
count_calls() {
    grep -cE "^[0-9]+ +($1)\(" "$TRACE" || true
}

main() {
    command -v strace > /dev/null || die "strace not found; install it (Debian: apt-get install strace)"
    ensure_client_deps
    ensure_server
    trap stop_server EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$RINGWS_ROOT/target"
    rm -f "$TRACE"

    start_server "$RINGWS_ROOT/target/no-epoll-server.log" "${STRACE[@]}" -- --mode echo
    local traffic_ok=1
    "$(client_python)" "$CLIENTS_DIR/python_client.py" echo "$SERVER_URL" || traffic_ok=0
    stop_server

    [ -s "$TRACE" ] || die "strace wrote no trace to $TRACE"
    local epoll_calls uring_enters uring_setups
    epoll_calls=$(count_calls 'epoll_[a-z0-9_]+')
    uring_enters=$(count_calls 'io_uring_enter')
    uring_setups=$(count_calls 'io_uring_setup')
    say "trace: $epoll_calls epoll_* calls, $uring_setups io_uring_setup calls, $uring_enters io_uring_enter calls"

    local failed=0
    if [ "$epoll_calls" -ne 0 ]; then
        say "FAIL: the server made epoll calls; the first ones:"
        grep -E "^[0-9]+ +epoll_[a-z0-9_]+\(" "$TRACE" | head -n 5 | sed 's/^/  strace| /'
        failed=1
    fi
    if [ "$uring_enters" -eq 0 ]; then
        say "FAIL: no io_uring_enter call in the trace, so it proves nothing about the server's I/O"
        failed=1
    fi
    [ "$traffic_ok" = 1 ] || { say "FAIL: the client traffic through the traced server failed"; failed=1; }
    [ "$failed" = 0 ] || die "no-epoll check failed (trace: ${TRACE#"$RINGWS_ROOT"/})"
    say "PASS: no epoll_* call; $uring_enters io_uring_enter calls under traffic"
}

main
