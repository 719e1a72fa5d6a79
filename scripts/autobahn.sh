#!/usr/bin/env bash
# Autobahn|Testsuite conformance run against `ringws serve --mode echo`.
#
# usage: scripts/autobahn.sh [--cases JSON] [--exclude JSON] [--tls] [--install-only]
#   --cases JSON     case patterns to run (default '["*"]')
#   --exclude JSON   case patterns to skip (default '[]': every case runs, 12.* and 13.* permessage-deflate too)
#   --tls            over wss://: the server gets --tls-cert/--tls-key (a CA and certificate made here with the
#                    openssl CLI, see make_tls_certs in scripts/lib.sh); the suite's Twisted client speaks TLS
#                    through pyOpenSSL (pinned in autobahn-constraints.txt) and does not verify the certificate
#   --install-only   install the suite and stop
#
# Steps: install the suite if needed, build ringws in release if needed, start the server in echo mode on a
# free port of 127.0.0.1, run the fuzzing client, judge reports/autobahn/index.json, stop the server (also on
# failure or Ctrl-C). Exit 0 only when every case ran and each verdict, behavior and close behavior, is OK,
# NON-STRICT, INFORMATIONAL or UNIMPLEMENTED.
#
# Environment:
#   AUTOBAHN_HOME        where the suite is installed (default ~/.cache/ringws-autobahn)
#   AUTOBAHN_REPORT_DIR  where the reports go (default reports/autobahn in the repository)
#   AUTOBAHN_TIMEOUT_S   time limit of the fuzzing client run (default 900)
#   RINGWS_SERVER_CMD    the server command (default target/release/ringws serve), see scripts/lib.sh
#
# The installation: wstest 0.8.2 is the last Autobahn|Testsuite release and runs on Python 2.7 only, which
# Debian 12 no longer ships. Debian 11 (bullseye) still has it in the same archive, so we download its
# .debs with a private apt configuration (the system's apt state is not touched), unpack them with
# `dpkg -x` into AUTOBAHN_HOME, and pip-install the suite into a prefix there, pinned by
# scripts/autobahn-constraints.txt. Nothing is installed system-wide.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

cases='["*"]'
exclude='[]'
install_only=0
tls=0
while [ $# -gt 0 ]; do
    case $1 in
        --cases) cases=${2:?--cases needs a JSON list}; shift 2 ;;
        --exclude) exclude=${2:?--exclude needs a JSON list}; shift 2 ;;
        --install-only) install_only=1; shift ;;
        --tls) tls=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

for list in "$cases" "$exclude"; do
    python3 -c 'import json, sys; assert isinstance(json.loads(sys.argv[1]), list)' "$list" 2> /dev/null \
        || die "--cases and --exclude take JSON lists, e.g. '[\"1.*\", \"2.1\"]', not: $list"
done

AB_HOME=${AUTOBAHN_HOME:-$HOME/.cache/ringws-autobahn}
mkdir -p "$AB_HOME" && AB_HOME=$(cd "$AB_HOME" && pwd)
CONSTRAINTS=$here/autobahn-constraints.txt
REPORT_DIR=${AUTOBAHN_REPORT_DIR:-$RINGWS_ROOT/reports/autobahn}
TIMEOUT_S=${AUTOBAHN_TIMEOUT_S:-900}
WSTEST_PID=""
DEBS="python2.7 python2.7-minimal libpython2.7-minimal libpython2.7-stdlib libpython2.7 libpython2.7-dev
      python2.7-dev libssl1.1 libffi7"

# The Debian mirror the machine's own apt uses (deb822 .sources or a classic sources.list).
debian_mirror() {
    grep -hoE '^(URIs:|deb) *[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
        2>/dev/null | head -n1 | sed -E 's/^(URIs:|deb) *//; s/ *$//' || true
}

# Downloads Python 2.7 and its libraries from Debian 11 and unpacks them into $AB_HOME/py27.
install_python27() {
    local apt=$AB_HOME/apt mirror
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main" \
        > "$apt/sources.list"
    cat > "$apt/apt.conf" <<EOF
Dir::Etc::SourceList "$apt/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::State::Lists "$apt/lists";
Dir::State::status "$apt/status";
Dir::Cache "$apt/cache";
APT::Sandbox::User "root";
EOF
    touch "$apt/status"
    say "downloading Python 2.7 from Debian 11 ($mirror)"
    APT_CONFIG=$apt/apt.conf apt-get -qq update
    # shellcheck disable=SC2086 # DEBS is a word list
    (cd "$apt/debs" && APT_CONFIG=$apt/apt.conf apt-get -qq download $DEBS)
    rm -rf "$AB_HOME/py27"
    local deb
    for deb in "$apt"/debs/*.deb; do dpkg -x "$deb" "$AB_HOME/py27"; done
    # Make the pip prefix below part of this Python's sys.path.
    mkdir -p "$AB_HOME/py27/usr/lib/python2.7/dist-packages"
    echo "import site; site.addsitedir('$AB_HOME/site/lib/python2.7/site-packages')" \
        > "$AB_HOME/py27/usr/lib/python2.7/dist-packages/ringws-autobahn.pth"
    cat > "$AB_HOME/python2" <<EOF
#!/bin/sh
export PYTHONHOME=$AB_HOME/py27/usr
export LD_LIBRARY_PATH=$AB_HOME/py27/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
exec $AB_HOME/py27/usr/bin/python2.7 "\$@"
EOF
    chmod +x "$AB_HOME/python2"
    "$AB_HOME/python2" -c 'import ssl, ctypes, zlib' || die "the unpacked Python 2.7 does not work"
}

# pip-installs wstest and its dependencies into $AB_HOME/site with the pins of autobahn-constraints.txt.
install_wstest() {
    local py=$AB_HOME/python2 wheels=$AB_HOME/wheels
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1
    local pip_install=(-m pip install --quiet --no-warn-script-location --prefix "$AB_HOME/site")
    rm -rf "$AB_HOME/site" && mkdir -p "$wheels"
    say "installing pip for Python 2.7, then wstest 0.8.2"
    # The last pip, setuptools and wheel for Python 2.7, fetched by the Python 3 pip (no get-pip.py needed).
    python3 -m pip download --quiet --no-deps -d "$wheels" pip==20.3.4 setuptools==44.1.1 wheel==0.36.2
    "$py" "$wheels/pip-20.3.4-py2.py3-none-any.whl/pip" "${pip_install[@]:2}" --no-index "$wheels"/*.whl
    # Twisted's setup.py imports incremental, so it must be there before the build without isolation.
    "$py" "${pip_install[@]}" -c "$CONSTRAINTS" incremental
    # wsaccel and ujson (autobahn's `accelerate` extra) are C extensions built against Python 2.7's headers.
    CFLAGS="-I$AB_HOME/py27/usr/include -I$AB_HOME/py27/usr/include/python2.7" \
        "$py" "${pip_install[@]}" --no-build-isolation -c "$CONSTRAINTS" \
        'autobahn[twisted,accelerate]' Twisted autobahntestsuite
    # PYTHONWARNINGS: cryptography warns on every start that Python 2 is deprecated.
    printf '#!/bin/sh\nexport PYTHONWARNINGS=ignore\nexec %s %s "$@"\n' "$py" "$AB_HOME/site/bin/wstest" > "$AB_HOME/wstest"
    chmod +x "$AB_HOME/wstest"
}

# Installs the suite unless an installation made from the same constraints already works.
install_suite() {
    local stamp=$AB_HOME/installed-constraints.txt
    if cmp -s "$CONSTRAINTS" "$stamp" && "$AB_HOME/wstest" -a > /dev/null 2>&1; then
        say "Autobahn|Testsuite already installed in $AB_HOME"
        return
    fi
    local t0=$SECONDS
    rm -f "$stamp"
    if ! "$AB_HOME/python2" -c 'import ssl' 2> /dev/null; then install_python27; fi
    install_wstest
    "$AB_HOME/wstest" -a > /dev/null || die "wstest does not run after installation"
    cp "$CONSTRAINTS" "$stamp"
    say "$("$AB_HOME/wstest" -a 2>&1 | grep AutobahnTestSuite) installed in $AB_HOME ($((SECONDS - t0)) s)"
}

# Runs the fuzzing client against $SERVER_URL; wstest exits 0 even when it reached no server, so its
# status means nothing: the verdict comes from index.json alone. wstest never ends when no case matches,
# so that is caught from its log, and the whole run has a time limit.
run_fuzzingclient() {
    rm -rf "$REPORT_DIR" && mkdir -p "$REPORT_DIR"
    REPORT_DIR=$(cd "$REPORT_DIR" && pwd)
    cat > "$REPORT_DIR/spec.json" <<EOF
{"outdir": "$REPORT_DIR", "servers": [{"agent": "ringws", "url": "$SERVER_URL"}],
 "cases": $cases, "exclude-cases": $exclude, "exclude-agent-cases": {}}
EOF
    say "fuzzingclient: cases $cases, excluded $exclude; log in ${REPORT_DIR}/wstest.log"
    local t0=$SECONDS log=$REPORT_DIR/wstest.log
    : > "$log"
    (cd "$REPORT_DIR" && exec "$AB_HOME/wstest" -m fuzzingclient -s spec.json) > "$log" 2>&1 &
    WSTEST_PID=$!
    while kill -0 "$WSTEST_PID" 2> /dev/null; do
        grep -q "will run 0 test cases" "$log" && die "no case matches --cases $cases --exclude $exclude"
        [ $((SECONDS - t0)) -lt "$TIMEOUT_S" ] || die "the fuzzing client did not finish within $TIMEOUT_S s"
        sleep 0.2
    done
    wait "$WSTEST_PID" || say "wstest exited non-zero (see wstest.log); judging index.json anyway"
    WSTEST_PID=""
    say "fuzzingclient finished in $((SECONDS - t0)) s"
}

cleanup() {
    if [ -n "$WSTEST_PID" ]; then
        kill -KILL "$WSTEST_PID" 2> /dev/null
        wait "$WSTEST_PID" 2> /dev/null || true
    fi
    stop_server
}

main() {
    install_suite
    [ "$install_only" = 1 ] && return 0
    ensure_server
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    mkdir -p "$RINGWS_ROOT/target"
    local tls_args=()
    if [ "$tls" = 1 ]; then
        make_tls_certs "$RINGWS_ROOT/target/autobahn-tls"
        tls_args=(--tls-cert "$RINGWS_ROOT/target/autobahn-tls/server.crt"
            --tls-key "$RINGWS_ROOT/target/autobahn-tls/server.key")
    fi
    start_server "$RINGWS_ROOT/target/autobahn-server.log" -- --mode echo "${tls_args[@]}"
    if [ "$tls" = 1 ]; then
        case "$SERVER_URL" in wss://*) ;; *) die "the server did not say wss:// ($SERVER_URL)" ;; esac
    fi
    run_fuzzingclient
    local server_alive=1 verdict=0
    kill -0 "$SERVER_PID" 2> /dev/null || server_alive=0
    python3 "$here/autobahn-judge.py" "$REPORT_DIR/index.json" "$REPORT_DIR/wstest.log" || verdict=$?
    if [ "$server_alive" = 0 ]; then
        sed 's/^/  server| /' "$SERVER_LOG" | tail -n 40 >&2
        die "the server died during the run"
    fi
    return "$verdict"
}

main
