//! permessage-deflate (RFC 7692): the negotiation, and whole-message inflate and deflate.
//!
//! ## What ringws agrees to
//! The server always answers `server_no_context_takeover`: every message it sends is compressed
//! from an empty window, so one compressor per worker serves every connection and a broadcast is
//! compressed once for all its subscribers (RFC 7692 §7.1.1.1 lets a server add this parameter
//! even when the offer did not ask for it). By default it also answers `client_no_context_takeover`
//! (§7.1.1.2 allows that too), so the client's messages are inflated from an empty window as well
//! and one inflater per worker serves every connection: an idle connection holds no zlib state at
//! all. [`DeflatePolicy::client_context_takeover`] lets the client keep its window instead; each
//! such connection then gets its own inflater (46 KiB, allocated at its first compressed
//! message and kept while it lives: the window is state that cannot be dropped while idle).
//!
//! ## The header
//! `Sec-WebSocket-Extensions` may appear several times and each may list several offers
//! (`name *( ";" param [ "=" value ] )`, comma-separated, values a token or a quoted string).
//! A header that does not follow that grammar, or a `permessage-deflate` offer with a duplicated
//! parameter or an invalid value, fails the handshake with 400. An offer with a parameter that
//! RFC 7692 does not define is declined and the next one considered (§5), as are offers of other
//! extensions. The first acceptable `permessage-deflate` offer is accepted.

use super::error::ProtoError;
use super::handshake::Reject;
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Status, Strategy};

/// Smallest and largest LZ77 window (log2 bytes) that RFC 7692 allows.
pub const WINDOW_BITS_MIN: u8 = 8;
pub const WINDOW_BITS_MAX: u8 = 15;
/// The tail that a sync flush ends with, removed by the sender and put back by the receiver
/// (§7.2.1, §7.2.2).
pub const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The name of the extension.
pub const NAME: &str = "permessage-deflate";

/// What the server is willing to agree to (from [`crate::Config`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflatePolicy {
    /// Negotiate permessage-deflate at all.
    pub enabled: bool,
    /// Let the client keep its LZ77 window across messages (a per-connection inflater);
    /// false answers `client_no_context_takeover`.
    pub client_context_takeover: bool,
    /// With client context takeover, the largest client window accepted, 8–15: answered as
    /// `client_max_window_bits` when the offer allows a value.
    pub client_window_bits_max: u8,
}

impl Default for DeflatePolicy {
    fn default() -> Self {
        DeflatePolicy {
            enabled: true,
            client_context_takeover: false,
            client_window_bits_max: WINDOW_BITS_MAX,
        }
    }
}

/// The parameters agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The client keeps its window across messages: we keep an inflater for it.
    pub client_context_takeover: bool,
    /// The window the server compresses with (the offer's `server_max_window_bits`, else 15).
    pub server_window_bits: u8,
    /// Whether the answer carries `server_max_window_bits` (it must when the offer had it).
    pub server_window_bits_answered: bool,
    /// The `client_max_window_bits` answered, if any.
    pub client_window_bits: Option<u8>,
}

impl Agreed {
    /// Writes the `Sec-WebSocket-Extensions` value that answers the offer; returns its length.
    /// 128 bytes are always enough.
    pub fn write_response(&self, out: &mut [u8; 128]) -> usize {
        let mut w = Writer { out, len: 0 };
        w.put(NAME);
        w.put("; server_no_context_takeover");
        if !self.client_context_takeover {
            w.put("; client_no_context_takeover");
        }
        if self.server_window_bits_answered {
            w.put("; server_max_window_bits=");
            w.put_num(self.server_window_bits);
        }
        if let Some(bits) = self.client_window_bits {
            w.put("; client_max_window_bits=");
            w.put_num(bits);
        }
        w.len
    }

    /// The answer as a string (tests, logs).
    pub fn response(&self) -> String {
        let mut out = [0u8; 128];
        let n = self.write_response(&mut out);
        String::from_utf8_lossy(&out[..n]).into_owned()
    }
}

struct Writer<'a> {
    out: &'a mut [u8; 128],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, s: &str) {
        self.out[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
    }

    fn put_num(&mut self, v: u8) {
        if v >= 10 {
            self.out[self.len] = b'0' + v / 10;
            self.len += 1;
        }
        self.out[self.len] = b'0' + v % 10;
        self.len += 1;
    }
}

const MALFORMED: Reject = Reject::BadRequest("malformed Sec-WebSocket-Extensions");
const BAD_PARAMETER: Reject =
    Reject::BadRequest("invalid or duplicated permessage-deflate parameter");

/// Chooses the first acceptable `permessage-deflate` offer among the values of every
/// `Sec-WebSocket-Extensions` header. `Ok(None)`: nothing to agree (no offer, none acceptable,
/// or the policy is off).
pub fn negotiate<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    policy: &DeflatePolicy,
) -> Result<Option<Agreed>, Reject> {
    if !policy.enabled {
        return Ok(None);
    }
    let mut chosen = None;
    for value in headers {
        let mut p = Parser {
            s: value.as_bytes(),
            i: 0,
        };
        // `1#extension`: empty list elements (", ,") are allowed by the list rule.
        loop {
            p.skip_ws();
            if p.eat(b',') {
                continue;
            }
            if p.done() {
                break;
            }
            let offer = p.extension()?;
            if chosen.is_none() {
                chosen = offer.and_then(|o| accept(&o, policy));
            }
            p.skip_ws();
            if !p.done() && !p.eat(b',') {
                return Err(MALFORMED);
            }
        }
    }
    Ok(chosen)
}

/// The offer a client role sends: both windows reset per message (the leanest for a load
/// generator holding many connections), and the server may name our window.
pub const CLIENT_OFFER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits";

/// What a client learns from the server's `Sec-WebSocket-Extensions` answer to an offer like
/// [`CLIENT_OFFER`] (RFC 7692 §7.1): the agreed parameters, seen from the client. None if the
/// answer is not a valid acceptance (the client must then fail the connection).
pub fn client_accepts(value: &str) -> Option<super::connection::Deflate> {
    let mut p = Parser {
        s: value.as_bytes(),
        i: 0,
    };
    p.skip_ws();
    let o = p.extension().ok()??;
    p.skip_ws();
    if !p.done() || o.unknown {
        return None;
    }
    Some(super::connection::Deflate {
        peer_context_takeover: !o.server_no_context_takeover,
        // An answer without a value is invalid (§7.1.2.2).
        send_window_bits: match o.client_max_window_bits {
            None => WINDOW_BITS_MAX,
            Some(Some(bits)) => bits,
            Some(None) => return None,
        },
    })
}

/// A `permessage-deflate` offer, validated.
#[derive(Debug, Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value.
    client_max_window_bits: Option<Option<u8>>,
    /// A parameter RFC 7692 does not define: the offer is declined.
    unknown: bool,
}

fn accept(o: &Offer, policy: &DeflatePolicy) -> Option<Agreed> {
    if o.unknown {
        return None;
    }
    let client_context_takeover = policy.client_context_takeover && !o.client_no_context_takeover;
    // The client's window only matters when we keep it: then answer our maximum if the offer lets
    // us name one (§7.1.2.2: only when the offer carries the parameter).
    let client_window_bits = match o.client_max_window_bits {
        Some(offered) if client_context_takeover => {
            let bits = offered
                .unwrap_or(WINDOW_BITS_MAX)
                .min(policy.client_window_bits_max);
            (bits < WINDOW_BITS_MAX || offered.is_some()).then_some(bits)
        }
        _ => None,
    };
    Some(Agreed {
        client_context_takeover,
        server_window_bits: o.server_max_window_bits.unwrap_or(WINDOW_BITS_MAX),
        server_window_bits_answered: o.server_max_window_bits.is_some(),
        client_window_bits,
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn token(&mut self) -> Result<&'a [u8], Reject> {
        let start = self.i;
        while self.i < self.s.len() && is_tchar(self.s[self.i]) {
            self.i += 1;
        }
        if self.i == start {
            return Err(MALFORMED);
        }
        Ok(&self.s[start..self.i])
    }

    /// A value: a token or a quoted string. Returns its unquoted bytes when they need no
    /// unescaping (a quoted value with a backslash is returned as `None`, i.e. invalid for us).
    fn value(&mut self) -> Result<Option<&'a [u8]>, Reject> {
        if !self.eat(b'"') {
            return self.token().map(Some);
        }
        let start = self.i;
        let mut escaped = false;
        loop {
            match self.s.get(self.i) {
                None => return Err(MALFORMED),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.i += 2;
                }
                Some(&c) if c == b'\t' || (c >= 0x20 && c != 0x7f) => self.i += 1,
                Some(_) => return Err(MALFORMED),
            }
        }
        if self.i > self.s.len() {
            return Err(MALFORMED);
        }
        let v = &self.s[start..self.i];
        self.i += 1;
        Ok((!escaped).then_some(v))
    }

    /// One extension with its parameters. `Some` only for a `permessage-deflate` offer.
    fn extension(&mut self) -> Result<Option<Offer>, Reject> {
        let name = self.token()?;
        let ours = name.eq_ignore_ascii_case(NAME.as_bytes());
        let mut o = Offer::default();
        loop {
            self.skip_ws();
            if !self.eat(b';') {
                break;
            }
            self.skip_ws();
            let pname = self.token()?;
            self.skip_ws();
            let value = if self.eat(b'=') {
                self.skip_ws();
                Some(self.value()?)
            } else {
                None
            };
            if ours {
                o.param(pname, value)?;
            }
        }
        Ok(ours.then_some(o))
    }
}

impl Offer {
    /// `value`: None without `=`, `Some(None)` for an escaped quoted string.
    fn param(&mut self, name: &[u8], value: Option<Option<&[u8]>>) -> Result<(), Reject> {
        let flag = |seen: &mut bool| {
            if *seen || value.is_some() {
                return Err(BAD_PARAMETER);
            }
            *seen = true;
            Ok(())
        };
        match name.to_ascii_lowercase().as_slice() {
            b"server_no_context_takeover" => flag(&mut self.server_no_context_takeover),
            b"client_no_context_takeover" => flag(&mut self.client_no_context_takeover),
            b"server_max_window_bits" => {
                if self.server_max_window_bits.is_some() {
                    return Err(BAD_PARAMETER);
                }
                let v = value.and_then(window_bits).ok_or(BAD_PARAMETER)?;
                self.server_max_window_bits = Some(v);
                Ok(())
            }
            b"client_max_window_bits" => {
                if self.client_max_window_bits.is_some() {
                    return Err(BAD_PARAMETER);
                }
                let v = match value {
                    None => None,
                    Some(v) => Some(window_bits(v).ok_or(BAD_PARAMETER)?),
                };
                self.client_max_window_bits = Some(v);
                Ok(())
            }
            _ => {
                self.unknown = true;
                Ok(())
            }
        }
    }
}

/// `8`..`15` in decimal without leading zeros (§7.1.2.1).
fn window_bits(v: Option<&[u8]>) -> Option<u8> {
    let n: u8 = match v? {
        [d @ b'8'..=b'9'] => d - b'0',
        [b'1', d @ b'0'..=b'5'] => 10 + (d - b'0'),
        _ => return None,
    };
    Some(n)
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

// ----- inflate and deflate --------------------------------------------------------------------

/// Output grows in steps of at most this many bytes (so a bomb never makes us reserve much past
/// the limit) and at least this many.
const INFLATE_STEP_BYTES_MAX: usize = 256 * 1024;
const INFLATE_STEP_BYTES_MIN: usize = 4096;

/// A raw-deflate decompressor with a 32 KiB window, which reads every window size 8–15.
pub struct Inflater {
    z: Inflate,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater {
            z: Inflate::new(false, WINDOW_BITS_MAX),
        }
    }

    /// Inflates one whole message: `input` is the payload of its frames joined (without the
    /// sync tail, which is added here, §7.2.2), appended to `out`. `fresh`: start from an empty
    /// window (no context takeover); otherwise the window of the previous messages is kept.
    ///
    /// Fails with [`ProtoError::MessageTooBig`] as soon as the output would pass `limit_bytes`
    /// (inflating stops there: a bomb costs at most `limit_bytes`), and with
    /// [`ProtoError::BadCompressedData`] on a stream that is not valid deflate.
    pub fn inflate_message(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit_bytes: u64,
        fresh: bool,
    ) -> Result<(), ProtoError> {
        if fresh {
            self.z.reset(false);
        }
        let start = out.len();
        let limit = usize::try_from(limit_bytes).unwrap_or(usize::MAX);
        let mut result = self.feed(input, out, start, limit);
        if result == Ok(false) {
            result = self.feed(&SYNC_TAIL, out, start, limit);
        }
        if result.is_err() {
            // A failed stream must not leak into the next message of this context.
            self.z.reset(false);
        }
        result.map(|_| ())
    }

    /// Inflates `input` into `out`; `Ok(true)` if the stream ended (a block with BFINAL).
    fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        start: usize,
        limit: usize,
    ) -> Result<bool, ProtoError> {
        loop {
            let produced = out.len() - start;
            // Room for one byte past the limit, to tell "exactly at" from "over".
            let room = (limit - produced.min(limit)).saturating_add(1);
            let step = (input.len().saturating_mul(4))
                .clamp(INFLATE_STEP_BYTES_MIN, INFLATE_STEP_BYTES_MAX)
                .min(room);
            let filled = out.len();
            if out.capacity() < filled + step {
                // Geometric growth, but never past the limit (+1).
                let cap_max = start.saturating_add(limit).saturating_add(1);
                let want = (out.capacity() * 2).min(cap_max).max(filled + step);
                out.reserve_exact(want - filled);
            }
            out.resize(filled + step, 0);
            let in_before = self.z.total_in();
            let out_before = self.z.total_out();
            let status = self
                .z
                .decompress(input, &mut out[filled..], InflateFlush::SyncFlush);
            let used = (self.z.total_in() - in_before) as usize;
            let wrote = (self.z.total_out() - out_before) as usize;
            out.truncate(filled + wrote);
            input = &input[used..];
            if out.len() - start > limit {
                return Err(ProtoError::MessageTooBig);
            }
            match status {
                Err(_) => return Err(ProtoError::BadCompressedData),
                // BFINAL was set (§7.2.3.3 allows it): nothing after it belongs to the stream.
                // The next message starts a new stream.
                Ok(Status::StreamEnd) => {
                    self.z.reset(false);
                    let tail_only =
                        input.len() <= SYNC_TAIL.len() && input == &SYNC_TAIL[..input.len()];
                    return if tail_only {
                        Ok(true)
                    } else {
                        Err(ProtoError::BadCompressedData)
                    };
                }
                Ok(_) => {
                    // Done once all input is consumed and the output was not the limit.
                    if input.is_empty() && wrote < step {
                        return Ok(false);
                    }
                    if used == 0 && wrote == 0 {
                        return Err(ProtoError::BadCompressedData);
                    }
                }
            }
        }
    }
}

/// A raw-deflate compressor for messages compressed from an empty window.
pub struct Deflater {
    z: Deflate,
    /// The window the receiver was promised (8–15).
    window_bits: u8,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Deflater({} bits)", self.window_bits)
    }
}

impl Deflater {
    /// `level` 0–9 (1: fastest), `window_bits` 8–15. A window of 8 is compressed with zlib's 9:
    /// zlib never emits a distance longer than the window minus 262 bytes (250 for 9 bits), so
    /// the stream is valid for a 256-byte window.
    pub fn new(level: u8, window_bits: u8) -> Deflater {
        let window_bits = window_bits.clamp(WINDOW_BITS_MIN, WINDOW_BITS_MAX);
        let config = DeflateConfig {
            level: i32::from(level.min(9)),
            window_bits: -i32::from(window_bits.max(9)),
            mem_level: 8,
            strategy: Strategy::Default,
            ..DeflateConfig::default()
        };
        Deflater {
            z: Deflate::new_with_config(config),
            window_bits,
        }
    }

    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }

    /// Compresses `input` as one message from an empty window and appends the payload that
    /// RFC 7692 sends (the sync-flushed stream without its final `00 00 ff ff`) to `out`.
    pub fn compress_message(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        self.z.reset();
        let start = out.len();
        loop {
            let filled = out.len();
            let step = (input.len() / 2 + 64).max(1024);
            out.resize(filled + step, 0);
            let in_before = self.z.total_in();
            let out_before = self.z.total_out();
            let status = self
                .z
                .compress(input, &mut out[filled..], DeflateFlush::SyncFlush);
            let used = (self.z.total_in() - in_before) as usize;
            let wrote = (self.z.total_out() - out_before) as usize;
            out.truncate(filled + wrote);
            input = &input[used..];
            // A sync flush is complete once all input is taken and output space was left over.
            if status.is_err() || (input.is_empty() && wrote < step) {
                break;
            }
        }
        if out[start..].ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(h: &[&str]) -> Result<Option<Agreed>, Reject> {
        negotiate(h.iter().copied(), &DeflatePolicy::default())
    }

    #[test]
    fn plain_offer_gets_both_no_context_takeovers() {
        let a = neg(&["permessage-deflate"]).unwrap().unwrap();
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn browser_offer() {
        let a = neg(&["permessage-deflate; client_max_window_bits"])
            .unwrap()
            .unwrap();
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn server_window_is_answered() {
        let a = neg(&["permessage-deflate; server_max_window_bits=10"])
            .unwrap()
            .unwrap();
        assert_eq!(a.server_window_bits, 10);
        assert!(a.response().ends_with("; server_max_window_bits=10"));
        let a = neg(&["permessage-deflate; server_max_window_bits=\"8\""])
            .unwrap()
            .unwrap();
        assert_eq!(a.server_window_bits, 8);
    }

    #[test]
    fn malformed_or_duplicated_is_400() {
        for h in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate;",
            "permessage-deflate; =1",
            "permessage-deflate client_no_context_takeover",
            "permessage-deflate; client_max_window_bits=\"10",
            "permessage-deflate; server_max_window_bits=\"1\\0\"",
            ";permessage-deflate",
        ] {
            match neg(&[h]) {
                Err(r) => assert_eq!(r.status(), 400, "{h}"),
                Ok(a) => panic!("{h} was accepted: {a:?}"),
            }
        }
    }

    #[test]
    fn unknown_parameter_declines_that_offer_only() {
        assert_eq!(neg(&["permessage-deflate; foo=1"]), Ok(None));
        let a = neg(&["permessage-deflate; foo, permessage-deflate; server_max_window_bits=12"])
            .unwrap()
            .unwrap();
        assert_eq!(a.server_window_bits, 12);
    }

    #[test]
    fn first_acceptable_offer_wins_across_headers() {
        let a = neg(&[
            "x-webkit-deflate-frame; no_context_takeover",
            "permessage-deflate; server_max_window_bits=9, permessage-deflate",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.server_window_bits, 9);
        assert_eq!(
            neg(&["x-webkit-deflate-frame", "foo; bar=\"baz, qux\""]),
            Ok(None)
        );
        assert!(neg(&[" , permessage-deflate ,"]).unwrap().is_some());
        assert!(
            neg(&["PerMessage-Deflate; Server_No_Context_Takeover"])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn client_reads_the_answer() {
        let d = client_accepts(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        )
        .unwrap();
        assert!(!d.peer_context_takeover);
        assert_eq!(d.send_window_bits, 15);
        let d = client_accepts("permessage-deflate; client_max_window_bits=10").unwrap();
        assert!(d.peer_context_takeover);
        assert_eq!(d.send_window_bits, 10);
        for bad in [
            "",
            "x-other",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; foo",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; server_max_window_bits=99",
        ] {
            assert_eq!(client_accepts(bad), None, "{bad}");
        }
        // Our own server's answers are all accepted by our client.
        for offer in [
            CLIENT_OFFER,
            "permessage-deflate",
            "permessage-deflate; server_max_window_bits=9",
        ] {
            let a = neg(&[offer]).unwrap().unwrap();
            assert!(client_accepts(&a.response()).is_some(), "{offer}");
        }
    }

    #[test]
    fn disabled_policy_agrees_nothing() {
        let p = DeflatePolicy {
            enabled: false,
            ..DeflatePolicy::default()
        };
        assert_eq!(negotiate(["permessage-deflate"], &p), Ok(None));
    }

    #[test]
    fn client_context_takeover_when_allowed() {
        let p = DeflatePolicy {
            client_context_takeover: true,
            client_window_bits_max: 12,
            ..DeflatePolicy::default()
        };
        let a = negotiate(["permessage-deflate; client_max_window_bits"], &p)
            .unwrap()
            .unwrap();
        assert!(a.client_context_takeover);
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
        );
        // Without client_max_window_bits in the offer we must not name it.
        let a = negotiate(["permessage-deflate"], &p).unwrap().unwrap();
        assert_eq!(a.client_window_bits, None);
        // The client's own no-takeover hint is taken up.
        let a = negotiate(["permessage-deflate; client_no_context_takeover"], &p)
            .unwrap()
            .unwrap();
        assert!(!a.client_context_takeover);
    }

    const JSON: &[u8] = br#"{"type":"trade","symbol":"BTC-USD","price":"43127.55","size":"0.0021","side":"buy","ts":1732406400123}"#;

    #[test]
    fn round_trip_fresh_windows() {
        let mut d = Deflater::new(1, 15);
        let mut i = Inflater::new();
        for n in [0usize, 1, 10, 100, 1000, 70_000] {
            let msg: Vec<u8> = JSON.iter().cycle().take(n).copied().collect();
            let mut c = Vec::new();
            d.compress_message(&msg, &mut c);
            if n >= 1000 {
                assert!(c.len() < n / 4, "{n} -> {}", c.len());
            }
            let mut out = Vec::new();
            i.inflate_message(&c, &mut out, 1 << 20, true).unwrap();
            assert_eq!(out, msg);
        }
    }

    #[test]
    fn rfc7692_examples() {
        // §7.2.3.1: "Hello" compressed, and §7.2.3.2: the same message again with the window kept.
        let mut i = Inflater::new();
        let mut out = Vec::new();
        i.inflate_message(
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            &mut out,
            100,
            true,
        )
        .unwrap();
        assert_eq!(out, b"Hello");
        out.clear();
        i.inflate_message(&[0xf2, 0x00, 0x11, 0x00, 0x00], &mut out, 100, false)
            .unwrap();
        assert_eq!(out, b"Hello");
        // The second one needs the window: from a fresh one it is invalid.
        out.clear();
        assert_eq!(
            i.inflate_message(&[0xf2, 0x00, 0x11, 0x00, 0x00], &mut out, 100, true),
            Err(ProtoError::BadCompressedData)
        );
        // §7.2.3.3: a stored block; §7.2.3.4 (BFINAL=1 then nothing).
        out.clear();
        i.inflate_message(
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
            &mut out,
            100,
            true,
        )
        .unwrap();
        assert_eq!(out, b"Hello");
        out.clear();
        i.inflate_message(
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
            &mut out,
            100,
            true,
        )
        .unwrap();
        assert_eq!(out, b"Hello");
        // After a final block, trailing bytes other than the sync tail are an error.
        out.clear();
        assert_eq!(
            i.inflate_message(
                &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x01],
                &mut out,
                100,
                true
            ),
            Err(ProtoError::BadCompressedData)
        );
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut c = Vec::new();
        Deflater::new(9, 15).compress_message(&zeros, &mut c);
        assert!(c.len() < 20_000, "{}", c.len());
        let mut i = Inflater::new();
        let mut out = Vec::new();
        assert_eq!(
            i.inflate_message(&c, &mut out, 1 << 20, true),
            Err(ProtoError::MessageTooBig)
        );
        assert!(
            out.capacity() <= (1 << 20) + INFLATE_STEP_BYTES_MAX + 1,
            "{}",
            out.capacity()
        );
        // Exactly at the limit is fine.
        out.clear();
        i.inflate_message(&c, &mut out, 10 << 20, true).unwrap();
        assert_eq!(out.len(), 10 << 20);
        // And the inflater is usable after a failure.
        out.clear();
        let mut c = Vec::new();
        Deflater::new(1, 15).compress_message(JSON, &mut c);
        i.inflate_message(&c, &mut out, 1000, true).unwrap();
        assert_eq!(out, JSON);
    }

    #[test]
    fn garbage_is_bad_compressed_data() {
        let mut i = Inflater::new();
        let mut out = Vec::new();
        // BTYPE=11 is reserved.
        assert_eq!(
            i.inflate_message(&[0xff, 0xff, 0xff], &mut out, 1000, true),
            Err(ProtoError::BadCompressedData)
        );
    }

    #[test]
    fn small_windows_keep_their_distances() {
        // Data whose repeats are 300 bytes apart: a 256-byte window must not reference them.
        let unit: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let msg: Vec<u8> = unit.iter().cycle().take(30_000).copied().collect();
        for bits in WINDOW_BITS_MIN..=WINDOW_BITS_MAX {
            let mut c = Vec::new();
            Deflater::new(6, bits).compress_message(&msg, &mut c);
            let max = max_distance(&c);
            assert!(max <= 1 << bits, "{bits} bits: distance {max}");
            if bits >= 10 {
                // The walker really sees the matches: with room, the 300-byte period is used.
                assert!(max >= 300, "{bits} bits: distance {max}");
            }
            let mut out = Vec::new();
            Inflater::new()
                .inflate_message(&c, &mut out, 1 << 20, true)
                .unwrap();
            assert_eq!(out, msg);
        }
    }

    /// The longest back-reference in a raw deflate stream (a tiny reference decoder).
    fn max_distance(data: &[u8]) -> usize {
        reference::max_distance(data)
    }

    mod reference {
        //! A slow deflate block walker that records the longest distance (for window tests).
        struct Bits<'a> {
            d: &'a [u8],
            pos: usize,
        }

        impl Bits<'_> {
            fn bit(&mut self) -> u32 {
                let b = (self.d[self.pos / 8] >> (self.pos % 8)) & 1;
                self.pos += 1;
                u32::from(b)
            }
            fn bits(&mut self, n: u32) -> u32 {
                (0..n).fold(0, |acc, i| acc | self.bit() << i)
            }
            fn more(&self) -> bool {
                self.pos + 3 <= self.d.len() * 8
            }
        }

        struct Huff {
            counts: [u16; 16],
            symbols: Vec<u16>,
        }

        fn huff(lengths: &[u8]) -> Huff {
            let mut counts = [0u16; 16];
            for &l in lengths {
                counts[l as usize] += 1;
            }
            counts[0] = 0;
            let mut offs = [0u16; 16];
            for i in 1..16 {
                offs[i] = offs[i - 1] + counts[i - 1];
            }
            let mut symbols = vec![0u16; lengths.len()];
            for (s, &l) in lengths.iter().enumerate() {
                if l != 0 {
                    symbols[offs[l as usize] as usize] = s as u16;
                    offs[l as usize] += 1;
                }
            }
            Huff { counts, symbols }
        }

        fn decode(b: &mut Bits<'_>, h: &Huff) -> u16 {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for len in 1..16 {
                code |= b.bit() as i32;
                let count = h.counts[len] as i32;
                if code - count < first {
                    return h.symbols[(index + (code - first)) as usize];
                }
                index += count;
                first += count;
                first <<= 1;
                code <<= 1;
            }
            panic!("bad code");
        }

        const LBASE: [u16; 29] = [
            3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
            115, 131, 163, 195, 227, 258,
        ];
        const LEXT: [u8; 29] = [
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
        ];
        const DBASE: [u16; 30] = [
            1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
            1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
        ];
        const DEXT: [u8; 30] = [
            0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12,
            12, 13, 13,
        ];

        pub fn max_distance(data: &[u8]) -> usize {
            let mut b = Bits { d: data, pos: 0 };
            let mut max = 0usize;
            while b.more() {
                let last = b.bit();
                let kind = b.bits(2);
                match kind {
                    0 => {
                        b.pos = b.pos.div_ceil(8) * 8;
                        if b.pos / 8 + 4 > data.len() {
                            break;
                        }
                        let len = b.bits(16) as usize;
                        b.bits(16);
                        b.pos += len * 8;
                    }
                    1 | 2 => {
                        let (lit, dist) = if kind == 1 {
                            let mut l = [8u8; 288];
                            l[144..256].fill(9);
                            l[256..280].fill(7);
                            (huff(&l), huff(&[5u8; 30]))
                        } else {
                            let hlit = b.bits(5) as usize + 257;
                            let hdist = b.bits(5) as usize + 1;
                            let hclen = b.bits(4) as usize + 4;
                            const ORDER: [usize; 19] = [
                                16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                            ];
                            let mut cl = [0u8; 19];
                            for &o in &ORDER[..hclen] {
                                cl[o] = b.bits(3) as u8;
                            }
                            let ch = huff(&cl);
                            let mut lens = Vec::new();
                            while lens.len() < hlit + hdist {
                                let s = decode(&mut b, &ch);
                                match s {
                                    0..=15 => lens.push(s as u8),
                                    16 => {
                                        let p = *lens.last().unwrap();
                                        for _ in 0..3 + b.bits(2) {
                                            lens.push(p);
                                        }
                                    }
                                    17 => {
                                        lens.extend(std::iter::repeat_n(0, 3 + b.bits(3) as usize))
                                    }
                                    _ => {
                                        lens.extend(std::iter::repeat_n(0, 11 + b.bits(7) as usize))
                                    }
                                }
                            }
                            (huff(&lens[..hlit]), huff(&lens[hlit..]))
                        };
                        loop {
                            let s = decode(&mut b, &lit) as usize;
                            if s < 256 {
                                continue;
                            }
                            if s == 256 {
                                break;
                            }
                            b.bits(u32::from(LEXT[s - 257]));
                            let _ = LBASE[s - 257];
                            let d = decode(&mut b, &dist) as usize;
                            let dv = DBASE[d] as usize + b.bits(u32::from(DEXT[d])) as usize;
                            max = max.max(dv);
                        }
                    }
                    _ => panic!("reserved block type"),
                }
                if last == 1 {
                    break;
                }
            }
            max
        }
    }
}
