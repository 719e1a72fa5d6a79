//! Frame headers (RFC 6455 §5.2): parse from a byte slice, encode into a caller buffer.
//!
//! ```text
//!  0               1               2               3
//!  F R R R opcode  M len7          len16 / len64 ...   masking key (4, client frames only)
//! ```
//! Parsing checks every header-level rule (reserved bits and opcodes, masking by role, control
//! frame rules, the 64-bit length's top bit, minimal length encoding), so the connection layer only
//! checks what needs state (fragmentation and limits).

use super::error::ProtoError;

/// Longest possible header: 2 + 8 (length) + 4 (mask).
pub const HEADER_BYTES_MAX: usize = 14;
/// Largest control-frame payload.
pub const CONTROL_PAYLOAD_MAX: usize = 125;
/// RSV1 as [`FrameHeader::rsv`] holds it: a compressed message (permessage-deflate).
pub const RSV1: u8 = 0b100;

/// Which side of the connection this endpoint is. Servers receive masked frames and send unmasked
/// ones; clients the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    pub fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes of header, 2..=14.
    pub header_len: u8,
}

/// Result of [`parse_header`] on a possibly short slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderParse {
    /// At least `need` bytes (counted from the start of the header) are required.
    Incomplete {
        need: usize,
    },
    Header(FrameHeader),
}

/// Parses a frame header received by `role`. `rsv_allowed` is the mask of RSV bits that a
/// negotiated extension permits (0 without extensions).
pub fn parse_header(buf: &[u8], role: Role, rsv_allowed: u8) -> Result<HeaderParse, ProtoError> {
    if buf.len() < 2 {
        return Ok(HeaderParse::Incomplete { need: 2 });
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x7;
    if rsv & !rsv_allowed != 0 {
        return Err(ProtoError::ReservedBits);
    }
    let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtoError::ReservedOpcode)?;
    let masked = b1 & 0x80 != 0;
    if masked != (role == Role::Server) {
        return Err(ProtoError::BadMask);
    }
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        if !fin {
            return Err(ProtoError::FragmentedControl);
        }
        if len7 as usize > CONTROL_PAYLOAD_MAX {
            return Err(ProtoError::ControlTooLong);
        }
    }
    let len_bytes = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return Ok(HeaderParse::Incomplete { need: header_len });
    }
    let payload_len = read_length(&buf[2..2 + len_bytes], len7)?;
    let mask = masked.then(|| {
        let m = &buf[2 + len_bytes..header_len];
        [m[0], m[1], m[2], m[3]]
    });
    Ok(HeaderParse::Header(FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len,
        header_len: header_len as u8,
    }))
}

fn read_length(ext: &[u8], len7: u8) -> Result<u64, ProtoError> {
    match len7 {
        126 => {
            let n = u16::from_be_bytes([ext[0], ext[1]]) as u64;
            if n < 126 {
                return Err(ProtoError::NonMinimalLength);
            }
            Ok(n)
        }
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(ext);
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return Err(ProtoError::LengthTopBit);
            }
            if n <= u16::MAX as u64 {
                return Err(ProtoError::NonMinimalLength);
            }
            Ok(n)
        }
        n => Ok(n as u64),
    }
}

/// Writes a frame header into `out` and returns its length. `rsv` is the RSV bits (low three).
pub fn encode_header(
    out: &mut [u8; HEADER_BYTES_MAX],
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = (u8::from(fin) << 7) | ((rsv & 0x7) << 4) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if payload_len <= u16::MAX as u64 {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    if let Some(m) = mask {
        out[n..n + 4].copy_from_slice(&m);
        n += 4;
    }
    n
}

/// Header length for a payload of `payload_len` bytes.
pub fn header_len(payload_len: u64, masked: bool) -> usize {
    let base = match payload_len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    base + if masked { 4 } else { 0 }
}

/// Appends a whole frame (header + payload, masked if `mask` is given) to `out`.
pub fn encode_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let mut hdr = [0u8; HEADER_BYTES_MAX];
    let n = encode_header(&mut hdr, fin, 0, opcode, payload.len() as u64, mask);
    out.extend_from_slice(&hdr[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        super::mask::unmask(&mut out[start..], m, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(buf: &[u8], role: Role) -> FrameHeader {
        match parse_header(buf, role, 0).unwrap() {
            HeaderParse::Header(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc_5_7_examples() {
        // A single-frame unmasked text message "Hello".
        let h = header(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], Role::Client);
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.header_len, h.mask),
            (true, OpCode::Text, 5, 2, None)
        );
        // A single-frame masked text message "Hello".
        let h = header(
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
            Role::Server,
        );
        assert_eq!(
            (h.payload_len, h.header_len, h.mask),
            (5, 6, Some([0x37, 0xfa, 0x21, 0x3d]))
        );
        // A fragmented unmasked text message: "Hel" then "lo".
        let h = header(&[0x01, 0x03, 0x48, 0x65, 0x6c], Role::Client);
        assert_eq!((h.fin, h.opcode), (false, OpCode::Text));
        let h = header(&[0x80, 0x02, 0x6c, 0x6f], Role::Client);
        assert_eq!((h.fin, h.opcode), (true, OpCode::Continuation));
        // Unmasked Ping "Hello" and masked Pong "Hello".
        assert_eq!(
            header(&[0x89, 0x05, 0x48], Role::Client).opcode,
            OpCode::Ping
        );
        let h = header(&[0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d], Role::Server);
        assert_eq!((h.opcode, h.payload_len), (OpCode::Pong, 5));
        // 256 bytes binary in a single unmasked frame, and 64 KiB.
        let h = header(&[0x82, 0x7E, 0x01, 0x00], Role::Client);
        assert_eq!(
            (h.opcode, h.payload_len, h.header_len),
            (OpCode::Binary, 256, 4)
        );
        let h = header(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0], Role::Client);
        assert_eq!((h.payload_len, h.header_len), (65536, 10));
    }

    #[test]
    fn header_errors() {
        let e = |b: &[u8], role| parse_header(b, role, 0).unwrap_err();
        assert_eq!(e(&[0xC1, 0x80], Role::Server), ProtoError::ReservedBits);
        assert_eq!(e(&[0x91, 0x80], Role::Server), ProtoError::ReservedBits);
        assert_eq!(e(&[0xA1, 0x80], Role::Server), ProtoError::ReservedBits);
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                e(&[0x80 | op, 0x80], Role::Server),
                ProtoError::ReservedOpcode,
                "op {op}"
            );
        }
        assert_eq!(e(&[0x81, 0x05], Role::Server), ProtoError::BadMask);
        assert_eq!(e(&[0x81, 0x85], Role::Client), ProtoError::BadMask);
        assert_eq!(
            e(&[0x09, 0x80], Role::Server),
            ProtoError::FragmentedControl
        );
        assert_eq!(e(&[0x89, 0xFE], Role::Server), ProtoError::ControlTooLong);
        assert_eq!(e(&[0x88, 0xFE], Role::Server), ProtoError::ControlTooLong);
        assert_eq!(
            e(
                &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                Role::Server
            ),
            ProtoError::LengthTopBit
        );
        assert_eq!(
            e(&[0x82, 0xFE, 0x00, 0x7D, 1, 2, 3, 4], Role::Server),
            ProtoError::NonMinimalLength
        );
        assert_eq!(
            e(
                &[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4],
                Role::Server
            ),
            ProtoError::NonMinimalLength
        );
        // An allowed RSV1 (a negotiated extension) passes.
        assert!(parse_header(&[0xC1, 0x80, 1, 2, 3, 4], Role::Server, 0b100).is_ok());
    }

    #[test]
    fn incomplete_reports_what_it_needs() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9];
        assert_eq!(
            parse_header(&full[..0], Role::Server, 0),
            Ok(HeaderParse::Incomplete { need: 2 })
        );
        assert_eq!(
            parse_header(&full[..1], Role::Server, 0),
            Ok(HeaderParse::Incomplete { need: 2 })
        );
        for cut in 2..14 {
            assert_eq!(
                parse_header(&full[..cut], Role::Server, 0),
                Ok(HeaderParse::Incomplete { need: 14 })
            );
        }
        assert_eq!(header(&full, Role::Server).payload_len, 65536);
    }

    #[test]
    fn encode_parse_every_length_class() {
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 40] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let mut out = [0u8; HEADER_BYTES_MAX];
                let n = encode_header(&mut out, true, 0, OpCode::Binary, len, mask);
                assert_eq!(n, header_len(len, mask.is_some()));
                let role = if mask.is_some() {
                    Role::Server
                } else {
                    Role::Client
                };
                let h = header(&out[..n], role);
                assert_eq!(
                    (h.payload_len, h.mask, h.header_len as usize),
                    (len, mask, n)
                );
            }
        }
    }
}
