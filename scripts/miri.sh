#!/usr/bin/env bash
# Runs the protocol-core and timer tests under Miri (undefined behaviour, out-of-bounds, bad
# aliasing, leaks). Miri is not shipped for the stable channel ("component 'miri' ... is
# unavailable for download for channel 'stable'"), so this uses the nightly toolchain and
# installs miri + rust-src into it when missing. The io_uring runtime is not run (Miri does not
# emulate io_uring system calls).
#
#   scripts/miri.sh                 # unit tests of proto:: and timer, and tests/{proto_connection,handshake,timer}.rs
#   PROPTEST_CASES=4 scripts/miri.sh
set -euo pipefail

cd "$(dirname "$0")/.."
toolchain="${MIRI_TOOLCHAIN:-nightly}"
# Property tests are slow under Miri: a few cases each still walk every code path once.
export PROPTEST_CASES="${PROPTEST_CASES:-8}"
# proptest writes its regression files and reads the clock; the tests read no other host state.
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-disable-isolation}"

if ! rustup toolchain list | grep -q "^$toolchain"; then
    rustup toolchain install "$toolchain" --profile minimal
fi
for c in miri rust-src; do
    if ! rustup component list --toolchain "$toolchain" --installed | grep -q "^$c"; then
        rustup component add "$c" --toolchain "$toolchain"
    fi
done

start=$(date +%s)
cargo +"$toolchain" miri setup
cargo +"$toolchain" miri test --lib -- proto:: timer
cargo +"$toolchain" miri test --test proto_connection --test handshake --test timer
echo "miri: passed in $(($(date +%s) - start)) s"
