//! permessage-deflate: the offer parser and the client's answer parser never panic and agree with
//! each other, and the inflater never panics, never writes past its limit and round-trips what the
//! deflater made.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringws::proto::deflate::{self, DeflatePolicy, Deflater, Inflater};
use ringws::proto::error::ProtoError;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let sel = data[0];
    let rest = &data[1..];
    if let Ok(text) = std::str::from_utf8(rest) {
        let policy = DeflatePolicy {
            enabled: true,
            client_context_takeover: sel & 1 != 0,
            client_window_bits_max: 8 + (sel >> 1) % 8,
        };
        // Several header lines: split on '\n'.
        if let Ok(Some(agreed)) = deflate::negotiate(text.split('\n'), &policy) {
            let answer = agreed.response();
            let seen = deflate::client_accepts(&answer).expect("our answer is a valid acceptance");
            assert_eq!(seen.send_window_bits, agreed.client_window_bits.unwrap_or(15));
            assert_eq!(seen.peer_context_takeover, false);
        }
        let _ = deflate::client_accepts(text);
    }
    // Arbitrary bytes as a compressed message, with a small limit.
    let limit = u64::from(sel) * 64;
    let mut out = Vec::new();
    match Inflater::new().inflate_message(rest, &mut out, limit, true) {
        Ok(()) => assert!(out.len() as u64 <= limit),
        Err(e) => assert!(matches!(e, ProtoError::MessageTooBig | ProtoError::BadCompressedData)),
    }
    // The deflater's output always inflates back, for every window.
    let bits = 8 + sel % 8;
    let mut c = Vec::new();
    Deflater::new(sel % 10, bits).compress_message(rest, &mut c);
    let mut back = Vec::new();
    Inflater::new()
        .inflate_message(&c, &mut back, rest.len() as u64, true)
        .expect("round trip");
    assert_eq!(back, rest);
});
