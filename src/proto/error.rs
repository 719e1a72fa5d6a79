//! Errors of the protocol core. Each maps to exactly one answer: a close code for a frame-level
//! violation, an HTTP status for a bad handshake.

use std::fmt;

/// Close codes (RFC 6455 §7.4.1) that ringws sends itself.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Never sent on the wire: reported locally when a Close frame carried no code.
    pub const NO_STATUS: u16 = 1005;
    /// Never sent on the wire: reported locally when TCP ended without a Close frame.
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const MANDATORY_EXTENSION: u16 = 1010;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const BAD_GATEWAY: u16 = 1014;

    /// Whether `code` may appear in a Close frame on the wire (RFC 6455 §7.4 and the IANA
    /// registry): 1000–1003, 1007–1014 and 3000–4999.
    pub fn is_valid_on_wire(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// A frame-level protocol violation, each with the close code it is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// RSV1–3 set with no extension negotiated.
    ReservedBits,
    /// Opcode 0x3–0x7 or 0xB–0xF.
    ReservedOpcode,
    /// A client frame without a mask (server role) or a masked server frame (client role).
    BadMask,
    /// A 64-bit payload length with its most significant bit set.
    LengthTopBit,
    /// A 16- or 64-bit length encoding for a length that fits in fewer bits.
    NonMinimalLength,
    /// A control frame with FIN=0.
    FragmentedControl,
    /// A control frame with more than 125 payload bytes.
    ControlTooLong,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new Text or Binary frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// A Close payload of exactly one byte.
    CloseLengthOne,
    /// A Close code that must not appear on the wire.
    InvalidCloseCode(u16),
    /// Text payload or a Close reason that is not UTF-8.
    InvalidUtf8,
    /// A frame payload over `frame_bytes_max`.
    FrameTooBig,
    /// A message over `message_bytes_max`.
    MessageTooBig,
    /// A message with more fragments than `message_fragments_max`.
    TooManyFragments,
    /// RSV1 (permessage-deflate) on a continuation or control frame (RFC 7692 §6.1).
    CompressedNotFirst,
    /// A compressed message that does not inflate (RFC 7692 §6.2 leaves the code open; like
    /// other servers we answer 1007, invalid payload data).
    BadCompressedData,
}

impl ProtoError {
    /// The close code that answers this violation.
    pub fn close_code(self) -> u16 {
        use ProtoError::*;
        match self {
            InvalidUtf8 | BadCompressedData => close_code::INVALID_PAYLOAD,
            FrameTooBig | MessageTooBig | TooManyFragments => close_code::MESSAGE_TOO_BIG,
            ReservedBits
            | ReservedOpcode
            | BadMask
            | LengthTopBit
            | NonMinimalLength
            | FragmentedControl
            | ControlTooLong
            | UnexpectedContinuation
            | ExpectedContinuation
            | CloseLengthOne
            | CompressedNotFirst
            | InvalidCloseCode(_) => close_code::PROTOCOL_ERROR,
        }
    }

    /// A short reason, sent as the Close frame's reason text.
    pub fn reason(self) -> &'static str {
        use ProtoError::*;
        match self {
            ReservedBits => "reserved bits set",
            ReservedOpcode => "reserved opcode",
            BadMask => "bad masking",
            LengthTopBit => "payload length top bit set",
            NonMinimalLength => "non-minimal payload length",
            FragmentedControl => "fragmented control frame",
            ControlTooLong => "control frame over 125 bytes",
            UnexpectedContinuation => "continuation without a message",
            ExpectedContinuation => "new message inside a fragmented one",
            CloseLengthOne => "close payload of one byte",
            InvalidCloseCode(_) => "invalid close code",
            InvalidUtf8 => "invalid UTF-8",
            FrameTooBig => "frame too big",
            MessageTooBig => "message too big",
            TooManyFragments => "too many fragments",
            CompressedNotFirst => "RSV1 on a continuation or control frame",
            BadCompressedData => "invalid compressed data",
        }
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close {})", self.reason(), self.close_code())
    }
}

impl std::error::Error for ProtoError {}

#[cfg(test)]
mod tests {
    use super::close_code::is_valid_on_wire;
    use super::*;

    #[test]
    fn close_code_table() {
        for code in 0u16..=u16::MAX {
            let expect = (1000..=1003).contains(&code)
                || (1007..=1014).contains(&code)
                || (3000..=4999).contains(&code);
            assert_eq!(is_valid_on_wire(code), expect, "code {code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_on_wire(code), "{code} must be invalid");
        }
        for code in [
            1000, 1001, 1002, 1003, 1007, 1010, 1011, 1014, 3000, 3999, 4000, 4999,
        ] {
            assert!(is_valid_on_wire(code), "{code} must be valid");
        }
    }

    #[test]
    fn each_error_has_its_code() {
        assert_eq!(ProtoError::InvalidUtf8.close_code(), 1007);
        assert_eq!(ProtoError::MessageTooBig.close_code(), 1009);
        assert_eq!(ProtoError::FrameTooBig.close_code(), 1009);
        assert_eq!(ProtoError::TooManyFragments.close_code(), 1009);
        assert_eq!(ProtoError::BadMask.close_code(), 1002);
        assert_eq!(ProtoError::ReservedOpcode.close_code(), 1002);
        assert_eq!(ProtoError::InvalidCloseCode(1005).close_code(), 1002);
        assert_eq!(ProtoError::CompressedNotFirst.close_code(), 1002);
        assert_eq!(ProtoError::BadCompressedData.close_code(), 1007);
    }
}
