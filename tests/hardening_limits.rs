//! Limits not covered by the e2e tests: pending handshakes (503, then a slot frees), a header
//! block over the limit that arrives across many reads (431), one frame over the frame limit and
//! too many fragments (1009), the handler refusing with 401/403, an unanswered Close cut at the
//! close timeout, and a connection flood past the table that neither crashes nor spins.
//! After each scenario the gauges come back to their baseline.
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Client, Event, READ_TIMEOUT, serve, test_config};
use hostile::{assert_baseline, eventually, raw_connect, raw_upgrade, upgrade_request};
use ringws::modes::Echo;
use ringws::proto::frame::OpCode;
use ringws::{Config, Conn, ConnId, Handler, Message, OpenDecision, UpgradeRequest};

const MASK: Option<[u8; 4]> = Some([9, 8, 7, 6]);

/// Refuses `/private` with 401 and `/admin` with 403; closes with 4001 on "bye"; echoes the
/// rest and reports every close.
struct Gate(mpsc::Sender<u16>);

impl Handler for Gate {
    fn on_open<'r>(&mut self, _conn: &mut Conn<'_>, req: &UpgradeRequest<'r>) -> OpenDecision<'r> {
        match req.path {
            "/private" => OpenDecision::Reject(401),
            "/admin" => OpenDecision::Reject(403),
            _ => OpenDecision::Accept { protocol: None },
        }
    }
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        if msg == Message::Text("bye") {
            conn.close(4001, "bye");
        } else {
            conn.send(msg);
        }
    }
    fn on_close(&mut self, _id: ConnId, code: u16, _reason: &str) {
        let _ = self.0.send(code);
    }
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Reads until the server ends TCP; what it sent.
fn read_all(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn pending_handshakes_past_the_limit_get_503_and_a_slot_frees() {
    let config = Config {
        handshakes_pending_per_worker_max: 4,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let handshaking = || server.metrics().total(|w| &w.handshaking);
    // Four peers connect and say nothing: they hold every handshake slot.
    let mut stalled: Vec<_> = (0..4).map(|_| raw_connect(addr).unwrap()).collect();
    assert!(eventually(READ_TIMEOUT, || handshaking() == 4));
    let mut fifth = raw_connect(addr).unwrap();
    fifth.write_all(upgrade_request("/").as_bytes()).unwrap();
    let answer = read_all(&mut fifth);
    assert_eq!(
        status_of(&answer),
        Some(503),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // One stalled peer leaves: its slot frees and a new client gets in (bounded retry).
    drop(stalled.pop());
    let mut again = None;
    for _ in 0..300 {
        match Client::connect(addr) {
            Ok(c) => {
                again = Some(c);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut c = again.expect("a handshake slot frees when a pending peer leaves");
    c.send_text("in").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("in".into()));
    drop((c, stalled, fifth));
    assert_baseline(addr, "pending handshakes");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn header_block_over_the_limit_across_many_reads_is_431() {
    let server = serve(test_config(), |_| Echo);
    let addr = server.local_addr();
    let max = test_config().handshake_header_bytes_max;
    let mut s = raw_connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // 100-byte header lines, each written on its own: the server gathers them in its spill.
    let line = format!("X-Pad: {}\r\n", "p".repeat(91));
    let mut sent = 0;
    while sent <= max + 200 {
        s.write_all(line.as_bytes()).unwrap();
        sent += line.len();
        std::thread::sleep(Duration::from_millis(2));
    }
    let answer = read_all(&mut s);
    assert_eq!(
        status_of(&answer),
        Some(431),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(s);
    assert_baseline(addr, "431 across reads");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn one_frame_over_the_frame_limit_is_1009() {
    let config = Config {
        frame_bytes_max: 1000,
        message_bytes_max: 100_000,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let mut c = Client::connect(addr).unwrap();
    // Fragments of 1000 bytes each make a message of 5000: allowed.
    c.send_frame(false, OpCode::Binary, &[1u8; 1000], MASK)
        .unwrap();
    for _ in 0..3 {
        c.send_frame(false, OpCode::Continuation, &[1u8; 1000], MASK)
            .unwrap();
    }
    c.send_frame(true, OpCode::Continuation, &[1u8; 1000], MASK)
        .unwrap();
    assert_eq!(c.recv().unwrap(), Event::Binary(vec![1u8; 5000]));
    // One frame of 1001 bytes is not.
    c.send_frame(true, OpCode::Binary, &[2u8; 1001], MASK)
        .unwrap();
    assert_eq!(c.recv_close().unwrap().0, 1009);
    c.read_to_eof().unwrap();
    drop(c);
    assert_baseline(addr, "frame over the limit");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn too_many_fragments_is_1009() {
    let config = Config {
        message_fragments_max: 4,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let mut c = Client::connect(addr).unwrap();
    let send = |c: &mut Client, count: usize| {
        c.send_frame(false, OpCode::Text, b"a", MASK).unwrap();
        for _ in 2..count {
            c.send_frame(false, OpCode::Continuation, b"a", MASK)
                .unwrap();
        }
        c.send_frame(true, OpCode::Continuation, b"a", MASK)
            .unwrap();
    };
    send(&mut c, 4);
    assert_eq!(c.recv().unwrap(), Event::Text("aaaa".into()));
    send(&mut c, 5);
    assert_eq!(c.recv_close().unwrap().0, 1009);
    c.read_to_eof().unwrap();
    drop(c);
    assert_baseline(addr, "too many fragments");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn handler_refuses_with_401_and_403() {
    let (tx, rx) = mpsc::channel();
    let server = serve(test_config(), move |_| Gate(tx.clone()));
    let addr = server.local_addr();
    let err = Client::connect_with(addr, "/private", &[]).err().unwrap();
    assert!(err.to_string().contains("401"), "{err}");
    let err = Client::connect_with(addr, "/admin", &[]).err().unwrap();
    assert!(err.to_string().contains("403"), "{err}");
    let mut ok = Client::connect_with(addr, "/public", &[]).unwrap();
    ok.send_text("x").unwrap();
    assert_eq!(ok.recv().unwrap(), Event::Text("x".into()));
    ok.close(1000, "").unwrap();
    assert_eq!(ok.recv_close().unwrap().0, 1000);
    ok.read_to_eof().unwrap();
    drop(ok);
    // Only the accepted connection is reported closed; the refused ones never opened.
    assert_eq!(rx.recv_timeout(READ_TIMEOUT).unwrap(), 1000);
    let m = hostile::metrics(addr);
    assert_eq!(m["ringws_http_responses_total{status=\"401\"}"], 1);
    assert_eq!(m["ringws_http_responses_total{status=\"403\"}"], 1);
    assert_baseline(addr, "handler refusals");
    assert!(rx.try_recv().is_err(), "a refused connection was reported");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn unanswered_close_is_cut_at_the_close_timeout() {
    let close_timeout_ms = 600;
    let config = Config {
        close_timeout_ms,
        ..test_config()
    };
    let (tx, rx) = mpsc::channel();
    let server = serve(config, move |_| Gate(tx.clone()));
    let addr = server.local_addr();
    let mut s = raw_upgrade(addr).unwrap();
    // The server's close timer starts after it reads this, so TCP cannot end sooner after it.
    let asked = Instant::now();
    s.write_all(&hostile::raw_frame(0x81, b"bye", MASK))
        .unwrap();
    // The server's Close (4001 "bye") comes, then nothing: the peer never answers it nor ends
    // TCP, and the server cuts TCP at its close timeout.
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let waited = asked.elapsed();
    assert_eq!(
        all,
        hostile::raw_frame(0x88, b"\x0f\xa1bye", None),
        "{all:?}"
    );
    // A lower bound only, with room for the worker's clock being a little behind.
    assert!(
        waited >= Duration::from_millis(close_timeout_ms / 2),
        "TCP ended {waited:?} after the Close was asked for, before the close timeout"
    );
    assert_eq!(rx.recv_timeout(READ_TIMEOUT).unwrap(), 4001);
    drop(s);
    assert_baseline(addr, "unanswered close");
    server.shutdown();
    server.join().unwrap();
}

/// 3 held clients, then 200 peers that send an upgrade request and keep their socket open after
/// the answer (so the answered ones linger until the close timeout and the fixed-file table,
/// 3 + 64 spare slots, fills). Returns how many peers got no answer at all (EOF or reset
/// without a status line), after checking everything else.
fn flood_past_the_table() -> usize {
    let config = Config {
        connections_per_worker_max: 3,
        close_timeout_ms: 500,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let mut held: Vec<Client> = (0..3).map(|_| Client::connect(addr).unwrap()).collect();
    let ticks_before = hostile::worker_cpu_ticks();
    let start = Instant::now();
    let mut flood: Vec<_> = (0..200).map(|_| raw_connect(addr).unwrap()).collect();
    let mut unanswered = Vec::new();
    for (i, s) in flood.iter_mut().enumerate() {
        let _ = s.write_all(upgrade_request("/").as_bytes());
        let mut answer = Vec::new();
        let res = s.read_to_end(&mut answer);
        match status_of(&answer) {
            Some(503) => {}
            None if answer.is_empty() => unanswered.push((i, res.err())),
            other => panic!("peer {i}: {other:?} {}", String::from_utf8_lossy(&answer)),
        }
    }
    // The held clients were served all along.
    for (i, c) in held.iter_mut().enumerate() {
        c.send_text(&i.to_string()).unwrap();
        assert_eq!(c.recv().unwrap(), Event::Text(i.to_string()));
    }
    let wall_ticks = start.elapsed().as_millis() as u64 / 10;
    let used = hostile::worker_cpu_ticks() - ticks_before;
    // A worker spinning on a full table would burn a whole core the entire time.
    assert!(
        used * 2 <= wall_ticks + 20,
        "the worker used {used} CPU ticks in {wall_ticks} wall ticks"
    );
    assert_eq!(
        server.metrics().total(|w| &w.open),
        3,
        "only the held clients are open"
    );
    // In-process: a /metrics request would itself be over the limit while the three are held.
    let m = hostile::parse_metrics(&server.metrics().render());
    let refused = m["ringws_http_responses_total{status=\"503\"}"] as usize;
    assert_eq!(
        refused + unanswered.len(),
        200,
        "every peer was accepted once"
    );
    drop((held, flood));
    assert_baseline(addr, "connection flood");
    server.shutdown();
    server.join().unwrap();
    if !unanswered.is_empty() {
        eprintln!(
            "{} of 200 peers were dropped without an answer: {unanswered:?}",
            unanswered.len()
        );
    }
    unanswered.len()
}

#[test]
fn connection_flood_past_the_table_neither_crashes_nor_spins() {
    flood_past_the_table();
}

#[test]
fn connection_flood_past_the_table_drops_no_peer_without_an_answer() {
    assert_eq!(flood_past_the_table(), 0, "peers dropped without a 503");
}
