#!/usr/bin/env bash
# Real third-party clients against `ringws serve --mode echo`.
#
# usage: scripts/clients.sh
#
# 1. Python `websockets` (tests/clients/python_client.py echo) and 2. Node `ws` (tests/clients/node_client.mjs):
#    text and binary echoes from 1 B to 1 MiB checked byte for byte, a ping and its pong, a clean close 1000.
#    Then both again with permessage-deflate (`python_client.py deflate`, `node_client.mjs --deflate`): the
#    handshake must agree it, JSON-like and random text and binary from 1 B to 1 MiB are checked byte for
#    byte, compressible echoes must come back compressed, and a second connection offers
#    server_max_window_bits=10 (client_max_window_bits=10 too), which the server must honour.
# 3. Over wss:// (`--tls-cert`/`--tls-key`, a CA and certificate made here with the openssl CLI): Python
#    `websockets` (python_client.py echo, trusting the CA through SSL_CERT_FILE) and Node `ws`
#    (node_client.mjs, through NODE_EXTRA_CA_CERTS) run their echo suites unchanged against a wss:// URL,
#    and headless Chromium (Debian's `chromium`) opens tests/clients/chromium_wss.html, which exchanges text
#    and binary over wss:// and checks the close code (tests/clients/chromium_wss.py drives it over the
#    DevTools protocol; the certificate is trusted by its SPKI hash). RINGWS_NO_CHROMIUM=1 skips Chromium
#    and says so (CI installs it).
# 4. Graceful shutdown: 10 clients connected, SIGTERM to the server; each must receive Close 1001 and the
#    server must exit 0 (within 30 s).
# Installs the pinned client dependencies first when missing (tests/clients/requirements.txt into the venv
# target/clients-venv, tests/clients/package-lock.json with npm ci). Exits non-zero if any check fails.
#
# Environment: RINGWS_SERVER_CMD, RINGWS_PYTHON, RINGWS_START_TIMEOUT_S (see scripts/lib.sh);
#   RINGWS_SHUTDOWN_CLIENTS  the number of clients of the shutdown check (default 10).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

SHUTDOWN_TIMEOUT_S=30
failures=()

# run_suite NAME COMMAND...: runs one client program; a non-zero exit counts as a failure.
run_suite() {
    local name=$1; shift
    section "$name"
    if "$@"; then say "$name: passed"; else failures+=("$name"); say "$name: FAILED"; fi
}

shutdown_check() {
    local py=$1 log=$RINGWS_ROOT/target/clients-shutdown-server.log clients=${RINGWS_SHUTDOWN_CLIENTS:-10}
    section "graceful shutdown: $clients clients get Close 1001, the server exits 0"
    start_server "$log" -- --mode echo
    local clients_ok=1 server_rc=0
    "$py" "$CLIENTS_DIR/python_client.py" shutdown "$SERVER_URL" --pid "$SERVER_MAIN_PID" --clients "$clients" \
        || clients_ok=0
    wait_server "$SHUTDOWN_TIMEOUT_S" || server_rc=$?
    if [ "$server_rc" = 0 ]; then
        echo "PASS the server exited 0 after SIGTERM"
    elif [ "$server_rc" = 124 ]; then
        echo "FAIL the server still ran ${SHUTDOWN_TIMEOUT_S} s after SIGTERM (killed)"
    else
        echo "FAIL the server exited with status $server_rc after SIGTERM"
    fi
    if [ "$clients_ok" = 1 ] && [ "$server_rc" = 0 ]; then
        say "shutdown: passed"
    else
        sed 's/^/  server| /' "$log" | tail -n 20
        failures+=("shutdown")
        say "shutdown: FAILED"
    fi
}

tls_checks() {
    local py=$1 certs=$RINGWS_ROOT/target/clients-tls
    section "echo server over wss:// (a CA made here)"
    rm -rf "$certs"
    make_tls_certs "$certs"
    start_server "$RINGWS_ROOT/target/clients-tls-server.log" -- --mode echo \
        --tls-cert "$certs/server.crt" --tls-key "$certs/server.key"
    case "$SERVER_URL" in wss://*) ;; *) die "the TLS server did not say wss:// ($SERVER_URL)" ;; esac
    run_suite "python websockets over wss://" \
        env SSL_CERT_FILE="$certs/ca.crt" "$py" "$CLIENTS_DIR/python_client.py" echo "$SERVER_URL"
    run_suite "node ws over wss://" \
        env NODE_EXTRA_CA_CERTS="$certs/ca.crt" node "$CLIENTS_DIR/node_client.mjs" "$SERVER_URL"
    if [ "${RINGWS_NO_CHROMIUM:-0}" = 1 ]; then
        say "headless chromium over wss://: SKIPPED (RINGWS_NO_CHROMIUM=1)"
    else
        command -v chromium > /dev/null || die "chromium is not installed (apt-get install chromium)"
        run_suite "headless chromium over wss://" \
            "$py" "$CLIENTS_DIR/chromium_wss.py" "$SERVER_URL" --spki "$TLS_SPKI"
    fi
    if ! kill -0 "$SERVER_PID" 2> /dev/null; then
        sed 's/^/  server| /' "$SERVER_LOG" | tail -n 20
        failures+=("the TLS server died during the client suites")
    fi
    stop_server
}

main() {
    ensure_client_deps
    ensure_server
    trap stop_server EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$RINGWS_ROOT/target"
    local py
    py=$(client_python)

    section "echo server for the client suites"
    start_server "$RINGWS_ROOT/target/clients-server.log" -- --mode echo
    run_suite "python websockets" "$py" "$CLIENTS_DIR/python_client.py" echo "$SERVER_URL"
    run_suite "node ws" node "$CLIENTS_DIR/node_client.mjs" "$SERVER_URL"
    run_suite "python websockets, permessage-deflate" "$py" "$CLIENTS_DIR/python_client.py" deflate "$SERVER_URL"
    run_suite "node ws, permessage-deflate" node "$CLIENTS_DIR/node_client.mjs" "$SERVER_URL" --deflate
    if ! kill -0 "$SERVER_PID" 2> /dev/null; then
        sed 's/^/  server| /' "$SERVER_LOG" | tail -n 20
        failures+=("the server died during the client suites")
    fi
    stop_server

    section "echo server with --deflate-client-takeover"
    start_server "$RINGWS_ROOT/target/clients-takeover-server.log" -- --mode echo --deflate-client-takeover
    run_suite "python websockets, permessage-deflate with client context takeover" \
        "$py" "$CLIENTS_DIR/python_client.py" deflate-takeover "$SERVER_URL"
    stop_server

    tls_checks "$py"

    shutdown_check "$py"

    section "clients summary"
    if [ ${#failures[@]} -gt 0 ]; then
        die "failed: $(IFS=','; echo "${failures[*]}")"
    fi
    say "all client checks passed"
}

main
