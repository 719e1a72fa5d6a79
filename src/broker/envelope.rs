//! What a node puts in a broker message: who published it, its position, when, and the
//! WebSocket frame itself (already framed once by the publishing node, plain).
//!
//! ```text
//!  0      1      2..4      4..8      8..16     16..24    24..32       32..
//! +------+------+--------+---------+---------+---------+------------+----------------------+
//! | 0xB7 | kind | 0 0    | epoch   | origin  | seq     | sent_ns    | unmasked FIN frame   |
//! +------+------+--------+---------+---------+---------+------------+----------------------+
//!   magic  1 pub  reserved  u32 LE    u64 LE    u64 LE    u64 LE       text or binary, RSV 0
//!          2 bcast
//! ```
//!
//! `(origin, epoch, seq)` is the message's position: `seq` counts 1, 2, 3… per origin node and
//! channel within one epoch. A receiver that sees a jump knows exactly how many it missed
//! (counted as lost). Issue #14 (history in Redis Streams) replaces it with the stream entry id.

use crate::proto::frame::{self, HeaderParse, OpCode, Role};

/// First byte of every envelope.
pub const MAGIC: u8 = 0xB7;
/// Bytes before the frame.
pub const HEADER_BYTES: usize = 32;

/// What the message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// To the subscribers of the channel's topic.
    Publish = 1,
    /// To every open connection.
    Broadcast = 2,
}

/// The fields of an envelope; the frame is `payload[HEADER_BYTES..]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub kind: Kind,
    pub epoch: u32,
    pub origin: u64,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Header,
    Frame,
    Utf8,
}

impl Envelope {
    /// Appends the header then `frame` to `out`.
    pub fn write(&self, frame: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&[MAGIC, self.kind as u8, 0, 0]);
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.origin.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.sent_ns.to_le_bytes());
        out.extend_from_slice(frame);
    }

    /// Reads and checks an envelope: the header, and a frame a client may be sent as is (one
    /// whole unmasked text or binary frame, RSV clear, its length exact, text valid UTF-8).
    /// Returns the fields, whether the frame is text, and where its payload starts (counted
    /// from the frame).
    pub fn read(buf: &[u8]) -> Result<(Envelope, bool, usize), Invalid> {
        if buf.len() < HEADER_BYTES || buf[0] != MAGIC || buf[2] != 0 || buf[3] != 0 {
            return Err(Invalid::Header);
        }
        let kind = match buf[1] {
            1 => Kind::Publish,
            2 => Kind::Broadcast,
            _ => return Err(Invalid::Header),
        };
        let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8 bytes"));
        let env = Envelope {
            kind,
            epoch: u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes")),
            origin: u64_at(8),
            seq: u64_at(16),
            sent_ns: u64_at(24),
        };
        let f = &buf[HEADER_BYTES..];
        let Ok(HeaderParse::Header(h)) = frame::parse_header(f, Role::Client, 0) else {
            return Err(Invalid::Frame);
        };
        let text = match h.opcode {
            OpCode::Text => true,
            OpCode::Binary => false,
            _ => return Err(Invalid::Frame),
        };
        let body = usize::from(h.header_len);
        if !h.fin || h.mask.is_some() || (f.len() - body) as u64 != h.payload_len {
            return Err(Invalid::Frame);
        }
        if text && simdutf8::basic::from_utf8(&f[body..]).is_err() {
            return Err(Invalid::Utf8);
        }
        Ok((env, text, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::{Message, encode_shared};

    fn env() -> Envelope {
        Envelope {
            kind: Kind::Publish,
            epoch: 7,
            origin: 0x0102_0304_0506_0708,
            seq: 42,
            sent_ns: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn round_trips() {
        for msg in [
            Message::Text("hello"),
            Message::Binary(&[0u8; 300]),
            Message::Text(""),
        ] {
            let f = encode_shared(msg);
            let mut out = Vec::new();
            env().write(&f, &mut out);
            assert_eq!(out.len(), HEADER_BYTES + f.len());
            let (e, text, body) = Envelope::read(&out).unwrap();
            assert_eq!(body, if f.len() > 127 { 4 } else { 2 });
            assert_eq!(e, env());
            assert_eq!(text, matches!(msg, Message::Text(_)));
            assert_eq!(&out[HEADER_BYTES..], &f[..]);
        }
    }

    #[test]
    fn refuses_what_a_client_must_not_be_sent() {
        let mut good = Vec::new();
        env().write(&encode_shared(Message::Text("hi")), &mut good);
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            Envelope::read(&b).unwrap_err()
        };
        assert_eq!(bad(&|b| b[0] = 0), Invalid::Header);
        assert_eq!(bad(&|b| b[1] = 9), Invalid::Header);
        assert_eq!(bad(&|b| b.truncate(20)), Invalid::Header);
        assert_eq!(bad(&|b| b.truncate(HEADER_BYTES + 3)), Invalid::Frame);
        assert_eq!(bad(&|b| b.push(b'!')), Invalid::Frame);
        assert_eq!(bad(&|b| b[HEADER_BYTES] = 0x01), Invalid::Frame); // not FIN
        assert_eq!(bad(&|b| b[HEADER_BYTES] = 0x89), Invalid::Frame); // ping
        assert_eq!(bad(&|b| b[HEADER_BYTES] = 0xc1), Invalid::Frame); // RSV1
        assert_eq!(bad(&|b| b[HEADER_BYTES + 2] = 0xff), Invalid::Utf8);
        let mut masked = good[..HEADER_BYTES].to_vec();
        masked.extend_from_slice(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
        assert_eq!(Envelope::read(&masked).unwrap_err(), Invalid::Frame);
    }
}
