//! Feeds arbitrary bytes to both handshake parsers and checks their invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringws::proto::handshake::*;

/// The key the client role expects its answer for (RFC 6455 §1.3's sample nonce).
const KEY: &[u8; KEY_LEN] = b"dGhlIHNhbXBsZSBub25jZQ==";

fuzz_target!(|data: &[u8]| {
    // A limit smaller than some inputs, so that 431 and its boundary are reached too.
    for max in [256, 8 * 1024] {
        check_request(data, max);
        check_response(data, max);
    }
});

fn check_request(data: &[u8], max: usize) {
    match parse_request(data, max) {
        Ok(Parsed::Incomplete) => assert!(data.len() <= max),
        Ok(Parsed::Complete(req)) => {
            assert!(req.header_len <= data.len() && req.header_len <= max);
            assert!(data[..req.header_len].ends_with(b"\r\n\r\n"));
            assert!(is_valid_key(req.key));
            assert!(req.path.starts_with('/'));
            assert!(!req.host.is_empty());
            let mut out = [0u8; 512];
            // A server picks a protocol from its own list; echo a fixed one when any is offered.
            let protocol = req.protocols_iter().next().map(|_| "chat");
            let len = write_accept(&mut out, req.key, protocol, None).expect("512 bytes suffice");
            let accepted = parse_response(&out[..len], &key_array(req.key), max.max(512));
            let expected = ClientParsed::Accepted {
                header_len: len,
                protocol,
            };
            assert_eq!(
                accepted,
                Ok(expected),
                "our own 101 must satisfy our own client"
            );
            for (name, value) in req.headers() {
                assert!(req.header(name).is_some());
                assert_eq!(value, value.trim_matches([' ', '\t']));
            }
        }
        Ok(Parsed::Plain(plain)) => {
            assert!(plain.header_len <= data.len() && plain.header_len <= max);
            assert!(plain.path.starts_with('/'));
        }
        Err(reject) => {
            assert!(matches!(reject.status(), 400 | 405 | 426 | 431));
            let mut out = [0u8; 512];
            assert!(reject.write(&mut out).is_some());
        }
    }
}

fn check_response(data: &[u8], max: usize) {
    match parse_response(data, KEY, max) {
        Ok(ClientParsed::Accepted {
            header_len,
            protocol,
        }) => {
            assert!(header_len <= data.len() && header_len <= max);
            assert!(protocol.is_none_or(|p| !p.is_empty()));
        }
        Ok(ClientParsed::Incomplete) => assert!(data.len() <= max),
        Err(ClientError::BadStatus(status)) => assert_ne!(status, 101),
        Err(_) => {}
    }
}

fn key_array(key: &str) -> [u8; KEY_LEN] {
    key.as_bytes().try_into().expect("a valid key is 24 bytes")
}
