# shellcheck shell=bash disable=SC2034 # variables such as SERVER_URL are read by the sourcing scripts
# Shared helpers for the scripts in scripts/ and for .ci/run. Source it; it does not run anything.
#
# Environment it reads:
#   RINGWS_SERVER_CMD  the server command, without --addr/--port/--mode (default: target/release/ringws serve).
#                      When it is the default, `ensure_server` builds it with `cargo build --release`.
#   RINGWS_START_TIMEOUT_S  how long to wait for the `listening on` line (default 60).
#   RINGWS_PYTHON      the Python that runs the client tests (default: the venv made by ensure_client_deps,
#                      target/clients-venv, when it exists; otherwise python3).

RINGWS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RINGWS_DEFAULT_SERVER_CMD="target/release/ringws serve"
CLIENTS_DIR=$RINGWS_ROOT/tests/clients
CLIENTS_VENV=$RINGWS_ROOT/target/clients-venv

SERVER_PID=""
SERVER_MAIN_PID=""
SERVER_LOG=""
SERVER_URL=""

say() { printf '%s: %s\n' "${0##*/}" "$*"; }
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }
section() { printf '\n==== %s ====\n' "$*"; }

# The server command as an array, in SERVER_CMD.
server_cmd() {
    read -r -a SERVER_CMD <<< "${RINGWS_SERVER_CMD:-$RINGWS_DEFAULT_SERVER_CMD}"
}

# Builds the release binary when the default command is used (a no-op when it is up to date).
ensure_server() {
    server_cmd
    if [ -z "${RINGWS_SERVER_CMD:-}" ]; then
        (cd "$RINGWS_ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
        [ -x "$RINGWS_ROOT/target/release/ringws" ] || die "cargo build --release produced no target/release/ringws"
    fi
}

# A TCP port on 127.0.0.1 that nobody listens on right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server LOGFILE [PREFIX...] -- [EXTRA ARGS...]
# Starts the server in echo mode on a free port of 127.0.0.1 and waits for its `listening on` line.
# PREFIX (e.g. `strace -f -o FILE`) runs in front of the server; SERVER_PID is then the prefix's pid and
# SERVER_MAIN_PID the server's own pid. Sets SERVER_URL (ws://127.0.0.1:PORT), SERVER_PORT, SERVER_LOG.
start_server() {
    SERVER_LOG=$1; shift
    local prefix=() extra=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do prefix+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    extra=("$@")
    server_cmd
    SERVER_PORT=$(free_port)
    local pidfile="$SERVER_LOG.pid"
    SERVER_MAIN_PID=""
    rm -f "$pidfile"
    : > "$SERVER_LOG"   # now, not in the background job, so that no older `listening on` line is seen
    say "starting: ${SERVER_CMD[*]} --addr 127.0.0.1 --port $SERVER_PORT ${extra[*]}"
    # `sh -c 'echo $$; exec ...'` records the server's own pid even behind a prefix such as strace.
    # shellcheck disable=SC2016 # $$, $0 and $@ are for that sh
    (cd "$RINGWS_ROOT" && exec "${prefix[@]}" sh -c 'echo $$ > "$0"; exec "$@"' "$pidfile" \
        "${SERVER_CMD[@]}" --addr 127.0.0.1 --port "$SERVER_PORT" "${extra[@]}") \
        > "$SERVER_LOG" 2>&1 < /dev/null &
    SERVER_PID=$!
    local timeout_s=${RINGWS_START_TIMEOUT_S:-60} waited_ds=0
    until grep -q "listening on wss\?://" "$SERVER_LOG" 2>/dev/null; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null && rc=0 || rc=$?
            SERVER_PID=""
            sed 's/^/  server| /' "$SERVER_LOG" >&2
            die "the server exited (status $rc) before printing 'listening on'"
        fi
        if [ "$waited_ds" -ge $((timeout_s * 10)) ]; then
            sed 's/^/  server| /' "$SERVER_LOG" >&2
            die "no 'listening on' line from the server within ${timeout_s}s"
        fi
        sleep 0.1; waited_ds=$((waited_ds + 1))
    done
    SERVER_MAIN_PID=$(cat "$pidfile")
    SERVER_URL="ws://127.0.0.1:$SERVER_PORT"
    if grep -q "listening on wss://" "$SERVER_LOG"; then SERVER_URL="wss://127.0.0.1:$SERVER_PORT"; fi
    say "server up: $(grep -m1 'listening on' "$SERVER_LOG") (pid $SERVER_MAIN_PID)"
}

# wait_server TIMEOUT_S: waits for the started server to exit; prints nothing, returns its exit status,
# or 124 if it still runs after TIMEOUT_S (it is then killed).
wait_server() {
    local timeout_s=$1 waited_ds=0 rc
    [ -n "$SERVER_PID" ] || return 0
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        if [ "$waited_ds" -ge $((timeout_s * 10)) ]; then
            kill -KILL "$SERVER_PID" 2>/dev/null || true
            [ -n "${SERVER_MAIN_PID:-}" ] && kill -KILL "$SERVER_MAIN_PID" 2>/dev/null
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=""
            return 124
        fi
        sleep 0.1; waited_ds=$((waited_ds + 1))
    done
    wait "$SERVER_PID" && rc=0 || rc=$?
    SERVER_PID=""
    return "$rc"
}

# stop_server: SIGTERM to the server, then SIGKILL after 10 s. Safe to call twice and from a trap.
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "${SERVER_MAIN_PID:-$SERVER_PID}" 2>/dev/null || true
    wait_server 10 || true
}

# Installs the pinned client dependencies when they are missing: a venv with tests/clients/requirements.txt
# (target/clients-venv) and tests/clients/node_modules (npm ci).
ensure_client_deps() {
    local stamp="$CLIENTS_VENV/.requirements"
    if ! cmp -s "$CLIENTS_DIR/requirements.txt" "$stamp" 2>/dev/null; then
        say "installing Python client dependencies into ${CLIENTS_VENV#"$RINGWS_ROOT"/}"
        python3 -m venv "$CLIENTS_VENV"
        "$CLIENTS_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            -r "$CLIENTS_DIR/requirements.txt"
        cp "$CLIENTS_DIR/requirements.txt" "$stamp"
    fi
    if ! cmp -s "$CLIENTS_DIR/package-lock.json" "$CLIENTS_DIR/node_modules/.ringws-lock" 2>/dev/null; then
        say "installing Node client dependencies (npm ci)"
        (cd "$CLIENTS_DIR" && npm ci --no-audit --no-fund --loglevel=error)
        cp "$CLIENTS_DIR/package-lock.json" "$CLIENTS_DIR/node_modules/.ringws-lock"
    fi
}

# The Python that runs the client programs.
client_python() {
    if [ -n "${RINGWS_PYTHON:-}" ]; then echo "$RINGWS_PYTHON"
    elif [ -x "$CLIENTS_VENV/bin/python" ]; then echo "$CLIENTS_VENV/bin/python"
    else echo python3
    fi
}

# make_tls_certs DIR: a throw-away CA (DIR/ca.crt) and a server certificate for localhost and 127.0.0.1
# signed by it (DIR/server.crt, DIR/server.key; P-256, valid 2 days), made with the openssl CLI; prints
# nothing. TLS_SPKI is set to the base64 SHA-256 of the server key's SubjectPublicKeyInfo (what
# Chromium's --ignore-certificate-errors-spki-list takes).
make_tls_certs() {
    local d=$1
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$d/ca.key" -out "$d/ca.crt" -subj "/CN=ringws test CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2> /dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$d/server.key" -out "$d/server.csr" -subj "/CN=localhost" 2> /dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > "$d/server.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
        -extfile "$d/server.ext" -out "$d/server.crt" 2> /dev/null
    TLS_SPKI=$(openssl x509 -in "$d/server.crt" -pubkey -noout | openssl pkey -pubin -outform der \
        | openssl dgst -sha256 -binary | base64)
}
