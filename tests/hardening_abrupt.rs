//! Abrupt ends beyond tests/e2e_abrupt.rs (which covers a reset mid-frame, a half-close after an
//! exchange and a reset during a large echo): a reset in the middle of a handshake, a peer that
//! goes silent in the middle of a message (found by the heartbeat), a half-close in the handshake
//! and right behind a message (which is still echoed), and a reset with many sends queued. Each
//! is reported once as 1006, every gauge comes back to its baseline, and the server keeps serving.
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Client, Event, READ_TIMEOUT, serve, test_config};
use hostile::{assert_baseline, eventually, raw_connect, raw_frame, raw_upgrade, reset};
use ringws::{Config, Conn, ConnId, Handler, Message, ServerHandle};

const MASK: Option<[u8; 4]> = Some([0xa1, 0xb2, 0xc3, 0xd4]);

/// Echoes and reports every close code.
struct Recorder(mpsc::Sender<(ConnId, u16)>);

impl Handler for Recorder {
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        conn.send(msg);
    }
    fn on_close(&mut self, id: ConnId, code: u16, _reason: &str) {
        let _ = self.0.send((id, code));
    }
}

fn start(config: Config) -> (ServerHandle, mpsc::Receiver<(ConnId, u16)>) {
    let (tx, rx) = mpsc::channel();
    let server = serve(config, move |_| Recorder(tx.clone()));
    (server, rx)
}

fn short() -> Config {
    Config {
        ping_interval_ms: 300,
        pong_timeout_ms: 300,
        close_timeout_ms: 1000,
        handshake_timeout_ms: 5000,
        ..test_config()
    }
}

/// The scenario's connection was reported exactly once, as 1006; then the gauges are back and a
/// new client is served.
fn check_after(server: ServerHandle, rx: &mpsc::Receiver<(ConnId, u16)>, scenario: &str) {
    let (_, code) = rx
        .recv_timeout(READ_TIMEOUT)
        .unwrap_or_else(|e| panic!("{scenario}: no close reported: {e}"));
    assert_eq!(code, 1006, "{scenario}");
    let addr = server.local_addr();
    assert_baseline(addr, scenario);
    assert!(rx.try_recv().is_err(), "{scenario}: reported twice");
    still_serves(addr);
    server.shutdown();
    server.join().unwrap();
}

fn still_serves(addr: SocketAddr) {
    let mut c = Client::connect(addr).unwrap();
    c.send_text("still here").unwrap();
    loop {
        match c.recv().unwrap() {
            Event::Ping(_) => continue,
            other => break assert_eq!(other, Event::Text("still here".into())),
        }
    }
}

#[test]
fn reset_in_the_middle_of_a_handshake() {
    let (server, _rx) = start(short());
    let addr = server.local_addr();
    let mut s = raw_connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgr").unwrap();
    let handshaking = || server.metrics().total(|w| &w.handshaking) == 1;
    assert!(eventually(READ_TIMEOUT, handshaking));
    reset(s);
    assert_baseline(addr, "reset mid-handshake");
    still_serves(addr);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn silent_peer_in_the_middle_of_a_message_is_found_by_the_heartbeat() {
    let config = short();
    let bound = Duration::from_millis(config.ping_interval_ms + config.pong_timeout_ms);
    let (server, rx) = start(config);
    let addr = server.local_addr();
    let mut s = raw_upgrade(addr).unwrap();
    // Half a fragmented message, then silence: no more bytes, no pong, no FIN.
    s.write_all(&raw_frame(0x02, b"first half", MASK)).unwrap();
    let frame = raw_frame(0x80, &[1u8; 500], MASK);
    s.write_all(&frame[..100]).unwrap();
    let start = Instant::now();
    let (frames, _) = hostile::read_frames_to_end(&mut s).unwrap();
    let found = start.elapsed();
    assert_eq!(
        frames.first().map(|f| f.0),
        Some(0x89),
        "pinged: {frames:?}"
    );
    // Generous: the heartbeat finds it after ping interval + pong deadline (plus scheduling).
    assert!(found < bound * 20, "found after {found:?}");
    drop(s);
    check_after(server, &rx, "silent peer");
}

#[test]
fn half_close_during_the_handshake_is_closed_cleanly() {
    let (server, _rx) = start(short());
    let addr = server.local_addr();
    let mut s = raw_connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (frames, rest) = hostile::read_frames_to_end(&mut s).unwrap();
    assert!(frames.is_empty(), "{frames:?}");
    assert!(
        rest.is_empty() || !rest.starts_with(b"HTTP/1.1 101"),
        "never upgraded"
    );
    drop(s);
    assert_baseline(addr, "half-close in handshake");
    still_serves(addr);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn half_close_when_open_delivers_what_was_sent_then_closes_cleanly() {
    let (server, rx) = start(short());
    let addr = server.local_addr();
    let mut s = raw_upgrade(addr).unwrap();
    s.write_all(&raw_frame(0x81, b"last words", MASK)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    // The server sends what it owed, then ends TCP with a FIN (read_to_end sees no reset).
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut all).expect("a clean end, not a reset");
    let echo = raw_frame(0x81, b"last words", None);
    assert!(all.starts_with(&echo), "the echo arrived: {all:?}");
    drop(s);
    check_after(server, &rx, "half-close when open");
}

#[test]
fn reset_while_many_sends_are_queued() {
    let (server, rx) = start(short());
    let addr = server.local_addr();
    let mut s = raw_upgrade(addr).unwrap();
    // Many echoes to a peer that does not read: the server keeps reading while its sends back
    // up (3 MiB is under the send-queue limit), so these writes complete.
    let frame = raw_frame(0x82, &[3u8; 16 * 1024], MASK);
    for _ in 0..200 {
        s.write_all(&frame).unwrap();
    }
    let queued = || server.metrics().total(|w| &w.messages_received) == 200;
    assert!(eventually(READ_TIMEOUT, queued));
    reset(s);
    check_after(server, &rx, "reset with queued sends");
}
