//! permessage-deflate through the engine: negotiation answers (101 with the agreed parameters,
//! 400 for a malformed or duplicated parameter), compressed echo both ways, a broadcast
//! compressed once and delivered compressed only to those who agreed, and the 1009 cap on a
//! decompression bomb.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{Client, Event, READ_TIMEOUT, http, metric, serve, test_config};
use ringws::modes::{Broadcast, Echo};
use ringws::proto::connection::MessageKind;
use ringws::{Config, Message};

fn json(n: usize) -> String {
    let unit = r#"{"e":"trade","s":"BTCUSDT","p":"43127.55000000","q":"0.00210000","m":true},"#;
    unit.chars().cycle().take(n).collect()
}

fn upgrade_request(extensions: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
    )
}

/// Sends an upgrade request with `extensions` and returns the answer's head.
fn answer_head(addr: std::net::SocketAddr, extensions: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(upgrade_request(extensions).as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn extensions_answer(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
        .map(str::to_string)
}

#[test]
fn negotiation_answers() {
    let server = serve(test_config(), |_| Echo);
    let addr = server.local_addr();
    let cases = [
        (
            "permessage-deflate; client_max_window_bits",
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10",
            ),
        ),
        // An unknown parameter declines that offer; the next one is taken.
        (
            "permessage-deflate; mystery, permessage-deflate; server_max_window_bits=12",
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=12",
            ),
        ),
        ("x-webkit-deflate-frame", None),
        ("permessage-deflate; mystery=1", None),
    ];
    for (offer, want) in cases {
        let head = answer_head(addr, offer);
        assert!(head.starts_with("HTTP/1.1 101"), "{offer}: {head}");
        assert_eq!(extensions_answer(&head).as_deref(), want, "{offer}");
    }
    for bad in [
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=yes",
        "permessage-deflate;;",
    ] {
        let answer = http(addr, &upgrade_request(bad)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad}: {answer}");
    }
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn compressed_echo_both_ways() {
    let server = serve(test_config(), |_| Echo);
    let addr = server.local_addr();
    let mut c = Client::connect_deflate(addr).unwrap();
    assert!(c.deflate.is_some(), "{}", c.response_head);
    let big = json(20_000);
    c.send_compressed(MessageKind::Text, big.as_bytes())
        .unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text(big.clone()));
    // Uncompressed from the client is fine too; the echo of a short one goes out plain.
    c.send_text("short").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("short".into()));
    let bin: Vec<u8> = big.bytes().rev().collect();
    c.send_compressed(MessageKind::Binary, &bin).unwrap();
    assert_eq!(c.recv().unwrap(), Event::Binary(bin));
    assert_eq!(metric(addr, "ringws_messages_inflated_total"), 2);
    assert_eq!(metric(addr, "ringws_messages_deflated_total"), 2);
    assert_eq!(metric(addr, "ringws_deflate_connections"), 1);
    c.close(1000, "").unwrap();
    assert_eq!(c.recv_close().unwrap().0, 1000);
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

/// The wire itself: RSV1 on the echo of a large message, not on a short one.
#[test]
fn rsv1_is_on_the_wire() {
    let server = serve(test_config(), |_| Echo);
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(upgrade_request("permessage-deflate").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let send = |s: &mut TcpStream, payload: &[u8]| {
        let mut f = Vec::new();
        ringws::proto::frame::encode_frame(
            &mut f,
            true,
            ringws::proto::frame::OpCode::Text,
            payload,
            Some([1, 2, 3, 4]),
        );
        s.write_all(&f).unwrap();
    };
    let big = json(4000);
    send(&mut s, big.as_bytes());
    send(&mut s, b"tiny");
    // Read until both echoes are in: 101 head, then two frames.
    let frames = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let body = &got[end + 4..];
        if body.len() < 2 {
            continue;
        }
        let len1 = match body[1] {
            126 if body.len() >= 4 => u16::from_be_bytes([body[2], body[3]]) as usize + 4,
            126 => continue,
            n => n as usize + 2,
        };
        if body.len() >= len1 + 2 && body.len() >= len1 + 2 + body[len1 + 1] as usize {
            break (body[0], body[len1], len1 - 4);
        }
    };
    assert_eq!(frames.0, 0xc1, "the large echo: FIN + RSV1 + text");
    assert!(frames.2 < big.len() / 4, "compressed to {} bytes", frames.2);
    assert_eq!(frames.1, 0x81, "the short echo goes plain");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn broadcast_is_compressed_for_those_who_agreed_only() {
    let server = serve(
        Config {
            workers: 2,
            ..test_config()
        },
        |_| Broadcast,
    );
    let addr = server.local_addr();
    let mut deflaters: Vec<Client> = (0..4)
        .map(|_| Client::connect_deflate(addr).unwrap())
        .collect();
    let mut plain: Vec<Client> = (0..4).map(|_| Client::connect(addr).unwrap()).collect();
    // Every connection open before the broadcast: each gets a short echo-broadcast of its own
    // hello (short: sent plain to all).
    for (i, c) in deflaters.iter_mut().chain(plain.iter_mut()).enumerate() {
        c.send_text(&format!("hello {i}")).unwrap();
        while c.recv().unwrap() != Event::Text(format!("hello {i}")) {}
    }
    assert_eq!(metric(addr, "ringws_deflate_connections"), 4);
    let before = metric(addr, "ringws_messages_deflated_total");
    let update = json(3000);
    server.publisher().broadcast(Message::Text(&update));
    for c in deflaters.iter_mut().chain(plain.iter_mut()) {
        loop {
            match c.recv().unwrap() {
                Event::Text(t) if t == update => break,
                Event::Text(_) => continue,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(
        metric(addr, "ringws_messages_deflated_total") - before,
        4,
        "one compressed delivery per deflate connection, none to the others"
    );
    drop(deflaters);
    drop(plain);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn a_bomb_is_answered_1009() {
    let server = serve(
        Config {
            message_bytes_max: 256 * 1024,
            ..test_config()
        },
        |_| Echo,
    );
    let addr = server.local_addr();
    let mut c = Client::connect_deflate(addr).unwrap();
    c.send_compressed(MessageKind::Binary, &vec![0u8; 64 << 20])
        .unwrap();
    assert_eq!(c.recv_close().unwrap().0, 1009);
    // The server is fine: a new connection echoes.
    let mut d = Client::connect_deflate(addr).unwrap();
    d.send_compressed(MessageKind::Text, json(1000).as_bytes())
        .unwrap();
    assert_eq!(d.recv().unwrap(), Event::Text(json(1000)));
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn disabled_deflate_answers_no_extension() {
    let server = serve(
        Config {
            deflate: false,
            ..test_config()
        },
        |_| Echo,
    );
    let addr = server.local_addr();
    let head = answer_head(addr, "permessage-deflate; client_max_window_bits");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(extensions_answer(&head), None);
    let mut c = Client::connect_deflate(addr).unwrap();
    assert_eq!(c.deflate, None);
    c.send_text(&json(5000)).unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text(json(5000)));
    server.shutdown();
    server.join().unwrap();
}
