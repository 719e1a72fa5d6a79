//! The server's whole handshake on a realistic browser request: parse it, compute the accept key
//! and write the 101 answer. Target: at most 1 µs.

use criterion::{Criterion, criterion_group, criterion_main};
use ringws::proto::handshake::{Parsed, accept_key, parse_request, write_accept};
use std::hint::black_box;

/// A Chrome upgrade request as captured on the wire (380 bytes, a few
/// optional headers left out).
const REQUEST: &[u8] = b"GET /chat?room=7 HTTP/1.1\r\n\
Host: example.com:8080\r\n\
Connection: Upgrade\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

fn parse_accept_101(request: &[u8], out: &mut [u8]) -> usize {
    let Ok(Parsed::Complete(req)) = parse_request(request, 8 * 1024) else {
        panic!("the bench request must be accepted");
    };
    write_accept(out, req.key, None, None).expect("out is large enough")
}

fn bench_handshake(c: &mut Criterion) {
    let mut out = [0u8; 512];
    assert!(
        (300..=400).contains(&REQUEST.len()),
        "{} bytes",
        REQUEST.len()
    );
    c.bench_function("handshake/parse_accept_101", |b| {
        b.iter(|| parse_accept_101(black_box(REQUEST), black_box(&mut out)))
    });
    c.bench_function("handshake/parse", |b| {
        b.iter(|| parse_request(black_box(REQUEST), 8 * 1024).is_ok())
    });
    c.bench_function("handshake/accept_key", |b| {
        b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
}

criterion_group!(benches, bench_handshake);
criterion_main!(benches);
