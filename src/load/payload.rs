//! What the load generator puts in its messages, and how it checks what comes back.
//!
//! Echo: 8 bytes of a per-connection counter, then a fixed filler; the echo must match byte for
//! byte. Fanout: sequence number (u64 LE), send timestamp in ns since the run's epoch (u64 LE),
//! then filler; subscribers check the filler too.
//!
//! The filler is a template built once per worker: a byte pattern by default (which deflate
//! barely shrinks), lowercase letters for text (pubsub), or JSON-like trade updates with
//! `--deflate` ([`json_template`]), which compress as real fanout traffic does.

/// Bytes at the front of a fanout payload: sequence number and send timestamp.
pub const FANOUT_HEADER_BYTES: usize = 16;

/// The filler byte at `i` (a pattern, so that a shifted or corrupted echo does not match).
pub fn filler(i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(7)
}

/// The whole filler of `len` bytes, built once per worker: payloads are copied from it and echoes
/// compared against it with one `memcmp`.
pub fn template(len: usize) -> Vec<u8> {
    (0..len).map(filler).collect()
}

/// The filler a run uses: JSON-like if it should compress (`--deflate`), else letters for text
/// payloads (pubsub) or the byte pattern.
pub fn template_for(len: usize, text: bool, compressible: bool) -> Vec<u8> {
    match (compressible, text) {
        (true, _) => json_template(len),
        (false, true) => letters_template(len),
        (false, false) => template(len),
    }
}

/// Lowercase letters (`a` + i mod 26): a filler that is valid text.
pub fn letters_template(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// JSON-like trade updates (`{"e":"trade","E":…,"p":"…",…},` repeated, numbers varying from
/// record to record), ASCII and deterministic: compressible like real fanout updates, about 3:1
/// with zlib level 1, not the 50:1 of a repeated string.
pub fn json_template(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 192);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |modulo: u64| {
        // xorshift64: a fixed sequence, the same in every worker.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % modulo
    };
    let mut record = 0u64;
    while out.len() < len {
        let sym = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"][(record % 4) as usize];
        let line = format!(
            r#"{{"e":"trade","E":{},"s":"{sym}","t":{},"p":"{}.{:02}","q":"{}.{:08}","m":{}}},"#,
            1_732_412_141_000 + record * 7 + next(7),
            3_849_201_773 + record,
            43_000 + next(400),
            next(100),
            next(3),
            next(100_000_000),
            next(2) == 1,
        );
        out.extend_from_slice(line.as_bytes());
        record += 1;
    }
    out.truncate(len);
    out
}

/// Writes the echo payload for `counter` into `out`, whose length is at most `template`'s.
pub fn write_echo(out: &mut [u8], template: &[u8], counter: u64) {
    let len = out.len();
    out.copy_from_slice(&template[..len]);
    let head = len.min(8);
    out[..head].copy_from_slice(&counter.to_le_bytes()[..head]);
}

/// True if `got` is exactly the echo payload for `counter` (as long as `template`).
pub fn check_echo(got: &[u8], template: &[u8], counter: u64) -> bool {
    let head = template.len().min(8);
    got.len() == template.len()
        && got[..head] == counter.to_le_bytes()[..head]
        && got[head..] == template[head..]
}

/// Writes a fanout payload: sequence number, timestamp, then `template`'s bytes after them
/// (`template` is at least as long as `out`).
pub fn write_fanout(out: &mut [u8], template: &[u8], seq: u64, sent_ns: u64) {
    assert!(
        out.len() >= FANOUT_HEADER_BYTES,
        "fanout payload needs 16 bytes"
    );
    out.copy_from_slice(&template[..out.len()]);
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&sent_ns.to_le_bytes());
}

/// True if the bytes of a fanout payload after its `header_bytes` are `template`'s.
pub fn check_fanout_body(payload: &[u8], template: &[u8], header_bytes: usize) -> bool {
    (header_bytes..=template.len()).contains(&payload.len())
        && payload[header_bytes..] == template[header_bytes..payload.len()]
}

/// (sequence number, send timestamp) of a fanout payload, None if it is too short.
pub fn read_fanout(payload: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}

/// Bytes at the front of a text (pubsub) fanout payload: 16 hex digits of sequence number, 16 of
/// timestamp. The server's pubsub mode carries text messages only.
pub const FANOUT_TEXT_HEADER_BYTES: usize = 32;

/// Writes a text fanout payload: hex sequence number, hex timestamp, then `template`'s bytes
/// after them (text: [`letters_template`] or [`json_template`]).
pub fn write_fanout_text(out: &mut [u8], template: &[u8], seq: u64, sent_ns: u64) {
    assert!(
        out.len() >= FANOUT_TEXT_HEADER_BYTES,
        "text fanout payload needs 32 bytes"
    );
    out.copy_from_slice(&template[..out.len()]);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (k, v) in [seq, sent_ns].into_iter().enumerate() {
        for d in 0..16 {
            out[k * 16 + d] = HEX[((v >> (60 - 4 * d)) & 0xf) as usize];
        }
    }
}

/// (sequence number, send timestamp) of a text fanout payload, None if malformed.
pub fn read_fanout_text(payload: &[u8]) -> Option<(u64, u64)> {
    let hex = |b: &[u8]| -> Option<u64> {
        b.iter().try_fold(0u64, |acc, &c| {
            Some(acc << 4 | u64::from((c as char).to_digit(16)?))
        })
    };
    Some((hex(payload.get(..16)?)?, hex(payload.get(16..32)?)?))
}
