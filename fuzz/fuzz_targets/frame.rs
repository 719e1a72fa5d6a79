//! The frame header parser on arbitrary bytes: never panics, and whatever it accepts re-encodes
//! to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringws::proto::frame::{HeaderParse, Role, encode_header, parse_header};

fuzz_target!(|data: &[u8]| {
    for role in [Role::Server, Role::Client] {
        match parse_header(data, role, 0) {
            Ok(HeaderParse::Header(h)) => {
                assert!(h.header_len as usize <= data.len());
                let mut out = [0u8; 14];
                let n = encode_header(&mut out, h.fin, h.rsv, h.opcode, h.payload_len, h.mask);
                assert_eq!(&out[..n], &data[..n], "re-encoded header differs");
                assert_eq!(n, h.header_len as usize);
            }
            Ok(HeaderParse::Incomplete { need }) => assert!(need > data.len() && need <= 14),
            Err(_) => {}
        }
    }
});
