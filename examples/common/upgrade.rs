//! The WebSocket upgrade of the measurement examples, over any stream (TCP or TLS).
//! Included with `#[path = "common/upgrade.rs"] mod upgrade;`.
use std::io::{Read, Write};

use ringws::proto::handshake;

/// Sends the upgrade request and reads up to the end of the 101 answer (panics otherwise).
pub fn upgrade(s: &mut (impl Read + Write), host: &str) {
    let key = handshake::client_key([7; 16]);
    let mut req = Vec::new();
    handshake::write_client_request(&mut req, host, "/", &key, None);
    s.write_all(&req).unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed during handshake");
        got.extend_from_slice(&b[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}
