#!/usr/bin/env bash
# Runs the protocol-core and timer tests under Miri (undefined behaviour, out-of-bounds, bad
# aliasing, leaks). Miri is not shipped for the stable channel ("component 'miri' ... is
# unavailable for download for channel 'stable'"), so this uses the nightly toolchain and
# installs miri + rust-src into it when missing. The io_uring runtime is not run (Miri does not
# emulate io_uring system calls).
#
#   scripts/miri.sh              # unit tests of proto:: and timer, tests/{proto_connection,proto_deflate,handshake,timer}.rs
#   MIRI_FULL=1 scripts/miri.sh  # also the exhaustive and property tests (hours under Miri)
#
# By default the exhaustive loops and the property tests with a fixed case count are skipped:
# Miri runs them about 1000x slower than native (the every-length-and-offset unmask test alone
# did not finish in 10 minutes). The cases they cover are still reached by the smaller tests
# (e.g. split_anywhere_equals_whole unmasks 300 bytes cut at every point).
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

skips=()
if [ "${MIRI_FULL:-0}" != 1 ]; then
    for t in word_wide_matches_bytewise_at_every_length_and_offset \
        agrees_with_std_on_every_split_of_many_inputs \
        every_split_point_gives_identical_events every_split_point_of_a_small_stream_exhaustively \
        encode_parse_round_trip random_input_never_panics \
        random_bytes_never_panic every_prefix_is_incomplete_until_the_last_byte \
        client_response_every_prefix_is_incomplete \
        mutated_requests_never_panic wheel_matches_reference_model fuzz_decoder_on_random_bytes \
        big_time_jump_fires_everything_due_exactly_once \
        bomb_stops_at_the_limit round_trip_fresh_windows small_windows_keep_their_distances \
        every_split_point_and_byte_by_byte a_bomb_stops_at_the_message_limit_with_1009; do
        skips+=(--skip "$t")
    done
fi

start=$(date +%s)
cargo +"$toolchain" miri setup
cargo +"$toolchain" miri test --lib -- proto:: timer "${skips[@]}"
cargo +"$toolchain" miri test --test proto_connection --test proto_deflate --test handshake --test timer -- "${skips[@]}"
echo "miri: passed in $(($(date +%s) - start)) s"
