//! Slowloris: 2,000 connections send a valid upgrade request one byte per second, with a 3 s
//! handshake timeout. Meanwhile a normal client connects and echoes (it completes; its time is
//! printed and bounded only generously). Every slow connection is cut at the handshake deadline
//! (never before half of it, never upgraded), and the gauges come back to their baseline.
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Event, READ_TIMEOUT, serve, test_config};
use hostile::{assert_baseline, eventually, upgrade_request};
use ringws::Config;
use ringws::modes::Echo;

const SLOW: usize = 2000;
const HANDSHAKE_TIMEOUT_MS: u64 = 3000;

struct Slow {
    stream: TcpStream,
    connected: Instant,
    sent: usize,
    cut: Option<Instant>,
}

/// Sends the next byte, then looks for the server's end (EOF or reset) without blocking.
fn drip(s: &mut Slow, request: &[u8]) {
    if s.cut.is_some() {
        return;
    }
    if s.sent < request.len() {
        match s.stream.write(&request[s.sent..=s.sent]) {
            Ok(n) => s.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => s.cut = Some(Instant::now()),
        }
    }
    let mut buf = [0u8; 512];
    match s.stream.read(&mut buf) {
        Ok(0) => s.cut = Some(Instant::now()),
        Ok(n) => panic!(
            "a slow peer got an answer: {}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Err(_) => s.cut = Some(Instant::now()),
    }
}

#[test]
fn two_thousand_slow_handshakes_do_not_stop_a_normal_client() {
    let config = Config {
        handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS,
        ..test_config()
    };
    assert!(config.handshakes_pending_per_worker_max as usize > SLOW);
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let request = upgrade_request("/");
    let request = request.as_bytes();
    let mut slow: Vec<Slow> = (0..SLOW)
        .map(|_| {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_nonblocking(true).unwrap();
            stream.set_nodelay(true).unwrap();
            Slow {
                stream,
                connected: Instant::now(),
                sent: 0,
                cut: None,
            }
        })
        .collect();
    let handshaking = || server.metrics().total(|w| &w.handshaking);
    slow.iter_mut().for_each(|s| drip(s, request));
    // Most slow peers are in the server's handshake state at once (bounded wait; on a loaded
    // machine the first may already be cut before the last has connected).
    let crowd = eventually(READ_TIMEOUT, || handshaking() >= SLOW as u64 / 2);
    assert!(crowd, "only {} handshaking", handshaking());
    eprintln!("{} handshaking", handshaking());
    // Meanwhile, a normal client.
    let normal = std::thread::spawn(move || {
        let start = Instant::now();
        let mut c = Client::connect(addr).unwrap();
        c.send_text("through the crowd").unwrap();
        assert_eq!(c.recv().unwrap(), Event::Text("through the crowd".into()));
        start.elapsed()
    });
    let start = Instant::now();
    let limit = Duration::from_millis(HANDSHAKE_TIMEOUT_MS) + Duration::from_secs(60);
    while slow.iter().any(|s| s.cut.is_none()) && start.elapsed() < limit {
        slow.iter_mut().for_each(|s| drip(s, request));
        std::thread::sleep(Duration::from_secs(1));
    }
    let took = normal.join().unwrap();
    eprintln!("the normal client echoed in {took:?} among {SLOW} slow handshakes");
    assert!(
        took < Duration::from_secs(20),
        "normal client took {took:?}"
    );
    let early = Duration::from_millis(HANDSHAKE_TIMEOUT_MS / 2);
    for (i, s) in slow.iter().enumerate() {
        let cut = s.cut.unwrap_or_else(|| panic!("slow peer {i} never cut"));
        let lived = cut - s.connected;
        assert!(lived >= early, "slow peer {i} cut after only {lived:?}");
        assert!(
            s.sent < request.len(),
            "slow peer {i} sent its whole request"
        );
    }
    drop(slow);
    assert_baseline(addr, "slowloris");
    server.shutdown();
    server.join().unwrap();
}
