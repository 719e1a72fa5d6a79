//! Plain HTTP on the WebSocket port: bad handshakes, /metrics, limits answered in HTTP.
mod common;

use common::{Client, http, metric, serve, test_config};
use ringws::Config;
use ringws::modes::Echo;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn bad_handshakes_get_their_status() {
    let server = serve(test_config(), |_| Echo);
    let addr = server.local_addr();
    let junk = http(addr, "\x16\x03\x01 random bytes\r\n\r\n").unwrap();
    assert_eq!(status(&junk), 400, "{junk}");
    let no_key = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(status(&http(addr, no_key).unwrap()), 400);
    let post = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(status(&http(addr, &post).unwrap()), 405);
    let v8 = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
    );
    let answer = http(addr, &v8).unwrap();
    assert_eq!(status(&answer), 426);
    assert!(answer.contains("Sec-WebSocket-Version: 13"), "{answer}");
    let plain = http(addr, "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!((400..500).contains(&status(&plain)), "{plain}");
    let post_metrics = http(addr, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(status(&post_metrics), 405);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(status(&http(addr, &big).unwrap()), 431);
    assert!(metric(addr, "ringws_http_responses_total{status=\"400\"}") >= 2);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn metrics_count_and_return_to_baseline() {
    let server = serve(test_config(), |_| Echo);
    let addr = server.local_addr();
    let answer = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(status(&answer), 200);
    assert!(
        answer.contains("Content-Type: text/plain; version=0.0.4"),
        "{answer}"
    );
    for name in [
        "ringws_connections{state=\"open\"}",
        "ringws_messages_received_total",
        "ringws_bytes_sent_total",
        "ringws_closes_total{code=\"1000\"}",
        "ringws_backpressure_drops_total",
        "ringws_fixed_files_in_use",
        "ringws_slab_slots",
    ] {
        assert!(
            answer.contains(&format!("\n{name} ")),
            "{name} missing in {answer}"
        );
    }
    // The /metrics connection itself holds one descriptor and one slot while it is answered.
    let (base_files, base_slots) = (1, 1);
    let mut clients: Vec<Client> = (0..10).map(|_| Client::connect(addr).unwrap()).collect();
    for c in &mut clients {
        c.send_text("x").unwrap();
        c.recv().unwrap();
    }
    assert_eq!(metric(addr, "ringws_connections{state=\"open\"}"), 10);
    assert!(settles(addr, "ringws_fixed_files_in_use", base_files + 10));
    assert!(metric(addr, "ringws_messages_received_total") >= 10);
    // Small echoes leave from registered buffers (WRITE_FIXED).
    assert!(metric(addr, "ringws_sends_fixed_total") >= 10);
    for c in &mut clients {
        c.close(1000, "").unwrap();
        assert_eq!(c.recv_close().unwrap().0, 1000);
        c.read_to_eof().unwrap();
    }
    drop(clients);
    // Each client saw EOF, so the server has ended TCP; its Close completions may still be on
    // the way: poll until the gauges settle (bounded).
    let settled = settles(addr, "ringws_fixed_files_in_use", base_files)
        && settles(addr, "ringws_slab_slots", base_slots);
    assert!(
        settled,
        "descriptors or slots leaked: {}",
        http(addr, "GET /metrics HTTP/1.1\r\n\r\n").unwrap()
    );
    assert_eq!(metric(addr, "ringws_connections{state=\"open\"}"), 0);
    assert_eq!(metric(addr, "ringws_closes_total{code=\"1000\"}"), 10);
    server.shutdown();
    server.join().unwrap();
}

/// Polls a gauge until it equals `want` (bounded; earlier /metrics connections may linger for a
/// moment while their Close completes).
fn settles(addr: std::net::SocketAddr, name: &str, want: u64) -> bool {
    for _ in 0..500 {
        if metric(addr, name) == want {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

#[test]
fn origin_allowlist_refuses_others_with_403() {
    let config = Config {
        origins_allowed: vec!["https://good.example".into()],
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let mut ok = Client::connect_with(addr, "/", &["Origin: https://good.example"]).unwrap();
    ok.send_text("hi").unwrap();
    assert_eq!(ok.recv().unwrap(), common::Event::Text("hi".into()));
    let err = Client::connect_with(addr, "/", &["Origin: https://evil.example"])
        .err()
        .unwrap();
    assert!(err.to_string().contains("403"), "{err}");
    let err = Client::connect(addr).err().unwrap();
    assert!(err.to_string().contains("403"), "no Origin: {err}");
    drop(ok);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn past_the_connection_limit_the_answer_is_503() {
    let config = Config {
        connections_per_worker_max: 3,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let held: Vec<Client> = (0..3).map(|_| Client::connect(addr).unwrap()).collect();
    let err = Client::connect(addr).err().unwrap();
    assert!(err.to_string().contains("503"), "{err}");
    drop(held);
    // Slots free again once the held connections are gone: a new client gets in (bounded retry).
    let mut again = None;
    for _ in 0..300 {
        if let Ok(c) = Client::connect(addr) {
            again = Some(c);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut c = again.expect("a slot frees after clients leave");
    c.send_text("back").unwrap();
    assert_eq!(c.recv().unwrap(), common::Event::Text("back".into()));
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn past_the_pending_handshake_limit_the_answer_is_503() {
    let config = Config {
        handshakes_pending_per_worker_max: 2,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    // Two connections that never finish their handshake hold both pending places.
    let slow: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(&mut s, b"GET / HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // Until the server has accepted both, a third may still get in: retry (bounded) until 503.
    let mut refused = false;
    for _ in 0..300 {
        match Client::connect(addr) {
            Err(e) if e.to_string().contains("503") => {
                refused = true;
                break;
            }
            Ok(c) => drop(c),
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(refused, "no 503 with both pending places held");
    drop(slow);
    let mut again = None;
    for _ in 0..300 {
        if let Ok(c) = Client::connect(addr) {
            again = Some(c);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        again.is_some(),
        "pending places free once the slow clients leave"
    );
    drop(again);
    server.shutdown();
    server.join().unwrap();
}

/// A request that arrives in small pieces (each its own segment) is answered once whole; one
/// that trickles past the header limit without ending is answered 431.
#[test]
fn a_trickled_handshake_is_answered() {
    use std::io::{Read, Write};
    let server = serve(test_config(), |_| Echo);
    let addr = server.local_addr();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    for piece in request.as_bytes().chunks(7) {
        s.write_all(piece).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut answer = vec![0u8; 512];
    let n = s.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert_eq!(status(&answer), 101, "{answer}");

    // Past the limit without a line end: 431, even though no piece carried a '\n'.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nX-Pad: ").unwrap();
    let mut out = Vec::new();
    for _ in 0..40 {
        if s.write_all(&[b'a'; 256]).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let _ = s.read_to_end(&mut out);
    let answer = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(status(&answer), 431, "{answer}");
    server.shutdown();
    server.join().unwrap();
}

/// Strict HTTP at the upgrade (#16): an absolute-form target is served with its path, an
/// upgrade with a body is refused 400 (its bytes would otherwise be read as frames).
#[test]
fn absolute_form_is_upgraded_and_a_body_is_400() {
    use std::io::{Read, Write};
    let server = serve(test_config(), |_| Echo);
    let addr = server.local_addr();
    let upgrade = |target: &str, extra: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    };
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    s.write_all(upgrade("http://example.com/chat?x=1", "").as_bytes())
        .unwrap();
    let mut answer = vec![0u8; 512];
    let n = s.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert_eq!(status(&answer), 101, "{answer}");
    for extra in [
        "Content-Length: 5\r\n",
        "Transfer-Encoding: chunked\r\n",
        "Content-Length: x\r\n",
    ] {
        let answer = http(addr, &format!("{}hello", upgrade("/", extra))).unwrap();
        assert_eq!(status(&answer), 400, "{extra:?}: {answer}");
    }
    let answer = http(addr, &upgrade("ws://example.com/", "")).unwrap();
    assert_eq!(status(&answer), 400, "{answer}");
    server.shutdown();
    server.join().unwrap();
}
