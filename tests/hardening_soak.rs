//! The client side of `scripts/soak.sh` (ignored in the normal suite: it runs for minutes against
//! servers the script started). Mixed load until `SOAK_SECS` have passed:
//! - echo: persistent connections with pipelined messages of random sizes, each checked;
//! - churn: clients that connect, exchange a few messages and leave (cleanly, or by FIN or
//!   reset in the middle);
//! - fanout: subscribers of a pubsub topic and a publisher of numbered messages; every subscriber
//!   must receive every number, once, in order;
//! - hostile: slow handshakes, junk handshakes, unmasked and oversized frames, resets mid-frame.
//!
//! - wss: with `SOAK_WSS_ADDR` and `SOAK_TLS_CA` (a PEM CA file) set, echo and churn over TLS
//!   against a third server (the same checks).
//!
//! Any lost, duplicated or reordered message fails it.
//!
//! `SOAK_ECHO_ADDR=127.0.0.1:P SOAK_PUBSUB_ADDR=127.0.0.1:Q SOAK_SECS=60 cargo test --release
//! --test hardening_soak -- --ignored --nocapture`
mod common;
#[path = "common/hostile.rs"]
mod hostile;
#[path = "common/tls.rs"]
mod tls;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{Client, Event};
use hostile::{Rng, raw_connect, raw_frame, raw_upgrade, reset, upgrade_request};
use ringws::proto::connection::MessageKind;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tls::WssClient;

const MASK: Option<[u8; 4]> = Some([5, 6, 7, 8]);

#[derive(Default)]
struct Counts {
    echoed: AtomicU64,
    sessions: AtomicU64,
    delivered: AtomicU64,
    hostile: AtomicU64,
    heavy: AtomicU64,
}

fn env_addr(name: &str) -> SocketAddr {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run scripts/soak.sh"))
        .parse()
        .unwrap()
}

fn payload(rng: &mut Rng, tag: String) -> String {
    let n = match rng.below(50) {
        0 => 50_000,
        1..=9 => 2_000,
        _ => 100,
    };
    let n = rng.below(n) as usize;
    tag + &"x".repeat(n)
}

/// Round-trip times of echoes, one histogram (µs) per window of `SOAK_WINDOW_S` seconds.
type Windows = Vec<hdrhistogram::Histogram<u64>>;

fn window_s() -> u64 {
    std::env::var("SOAK_WINDOW_S").map_or(300, |s| s.parse().unwrap())
}

fn record(windows: &mut Windows, start: Instant, rtt: Duration) {
    let w = (start.elapsed().as_secs() / window_s()) as usize;
    while windows.len() <= w {
        windows.push(hdrhistogram::Histogram::new(3).unwrap());
    }
    let _ = windows[w].record(rtt.as_micros() as u64);
}

/// What the echo loop needs of a client, over ws:// or wss://.
trait Peer {
    fn send_text(&mut self, m: &str) -> std::io::Result<()>;
    fn recv(&mut self) -> std::io::Result<Event>;
    /// Sends Close 1000 and checks that it is answered (and, over ws://, the TCP end).
    fn close_checked(self);
}

impl Peer for Client {
    fn send_text(&mut self, m: &str) -> std::io::Result<()> {
        Client::send_text(self, m)
    }
    fn recv(&mut self) -> std::io::Result<Event> {
        Client::recv(self)
    }
    fn close_checked(mut self) {
        self.close(1000, "").unwrap();
        assert_eq!(self.recv().unwrap(), Event::Close(1000, String::new()));
        self.read_to_eof().unwrap();
    }
}

impl Peer for WssClient {
    fn send_text(&mut self, m: &str) -> std::io::Result<()> {
        self.send(MessageKind::Text, m.as_bytes())
    }
    fn recv(&mut self) -> std::io::Result<Event> {
        WssClient::recv(self)
    }
    fn close_checked(mut self) {
        self.close(1000, "").unwrap();
        assert_eq!(self.recv().unwrap(), Event::Close(1000, String::new()));
    }
}

/// Pipelined echo on one connection until `end`; checks every echo and records the round trip
/// of each batch's messages. `tag` names the messages and the failures.
fn echo(mut c: impl Peer, tag: &str, id: u64, end: Instant, counts: &Counts) -> Windows {
    let mut rng = Rng::new(id + 1 + tag.len() as u64 * 0x7155);
    let mut n = 0u64;
    let (start, mut windows) = (Instant::now(), Windows::new());
    while Instant::now() < end {
        let sent_at = Instant::now();
        let batch: Vec<String> = (0..1 + rng.below(16))
            .map(|i| payload(&mut rng, format!("{tag}{id}/{n}/{i}:")))
            .collect();
        for m in &batch {
            c.send_text(m).unwrap();
        }
        for m in batch {
            match c.recv().unwrap() {
                Event::Text(t) => assert!(t == m, "{tag} echo {id}: lost or reordered at {n}"),
                other => panic!("{tag} echo {id}: unexpected {other:?}"),
            }
            record(&mut windows, start, sent_at.elapsed());
            counts.echoed.fetch_add(1, Relaxed);
        }
        n += 1;
    }
    c.close_checked();
    windows
}

/// Peers that make the server buffer: one that sends and never reads (the server stops
/// reading it, #16), one that reads its echoes slowly (all must arrive), one that floods pings
/// and never reads.
fn heavy_round(addr: SocketAddr, counts: &Counts) {
    if let Ok(mut s) = raw_upgrade(addr) {
        s.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let frame = raw_frame(0x82, &[9u8; 64 * 1024], MASK);
        for _ in 0..256 {
            if s.write_all(&frame).is_err() {
                break; // blocked: the server stopped reading us
            }
        }
        reset(s);
    }
    let mut c = Client::connect(addr).unwrap();
    let msg = vec![3u8; 4096];
    for _ in 0..256 {
        c.send_binary(&msg).unwrap();
    }
    for i in 0..256 {
        if i % 16 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        match c.recv().unwrap() {
            Event::Binary(b) => assert_eq!(b.len(), msg.len(), "slow reader: echo {i}"),
            other => panic!("slow reader: unexpected {other:?}"),
        }
    }
    c.close(1000, "").unwrap();
    let _ = c.read_to_eof();
    if let Ok(mut s) = raw_upgrade(addr) {
        s.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let pings = raw_frame(0x89, &[1u8; 125], MASK).repeat(1024);
        for _ in 0..64 {
            if s.write_all(&pings).is_err() {
                break;
            }
        }
        drop(s);
    }
    counts.heavy.fetch_add(1, Relaxed);
}

/// Connect, a few messages, leave: cleanly (checked), by FIN, or by reset mid-frame.
fn churn(addr: SocketAddr, id: u64, end: Instant, counts: &Counts) {
    let mut rng = Rng::new(0xc0ffee + id);
    let mut s = 0;
    while Instant::now() < end {
        let mut c = Client::connect(addr).unwrap();
        let msgs: Vec<String> = (0..rng.below(10))
            .map(|i| payload(&mut rng, format!("c{id}/{s}/{i}:")))
            .collect();
        for m in &msgs {
            c.send_text(m).unwrap();
        }
        match rng.below(10) {
            0..=6 => {
                for m in msgs {
                    assert_eq!(c.recv().unwrap(), Event::Text(m), "churn {id}/{s}");
                    counts.echoed.fetch_add(1, Relaxed);
                }
                c.close(1000, "").unwrap();
                assert_eq!(c.recv().unwrap(), Event::Close(1000, String::new()));
                c.read_to_eof().unwrap();
            }
            7 | 8 => drop(c),
            _ => {
                let frame = raw_frame(0x82, &[1u8; 4000], MASK);
                let _ = c.send_raw(&frame[..1000]);
                reset(c.stream.try_clone().unwrap());
            }
        }
        counts.sessions.fetch_add(1, Relaxed);
        s += 1;
    }
}

/// The wss:// side, if `SOAK_WSS_ADDR` is set: its address and a client configuration that
/// trusts the CA in the PEM file `SOAK_TLS_CA` (TLS 1.3 and 1.2, ALPN http/1.1).
fn wss_target() -> Option<(SocketAddr, Arc<rustls::ClientConfig>)> {
    let addr = std::env::var("SOAK_WSS_ADDR").ok()?.parse().unwrap();
    let ca = std::env::var("SOAK_TLS_CA").expect("SOAK_WSS_ADDR needs SOAK_TLS_CA");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Some((addr, Arc::new(c)))
}

/// Connect over wss://, a few messages, leave: cleanly (checked), by dropping the TCP
/// connection, or by a reset in the middle of a record.
fn wss_churn(addr: SocketAddr, config: Arc<rustls::ClientConfig>, end: Instant, counts: &Counts) {
    let mut rng = Rng::new(0x5eed);
    let mut s = 0;
    while Instant::now() < end {
        let mut c = WssClient::connect(addr, config.clone()).unwrap();
        let msgs: Vec<String> = (0..rng.below(10))
            .map(|i| payload(&mut rng, format!("wc/{s}/{i}:")))
            .collect();
        for m in &msgs {
            c.send(MessageKind::Text, m.as_bytes()).unwrap();
        }
        match rng.below(10) {
            0..=6 => {
                for m in msgs {
                    assert_eq!(c.recv().unwrap(), Event::Text(m), "wss churn {s}");
                    counts.echoed.fetch_add(1, Relaxed);
                }
                c.close(1000, "").unwrap();
                assert_eq!(c.recv().unwrap(), Event::Close(1000, String::new()));
            }
            7 | 8 => drop(c),
            _ => reset(c.stream.sock.try_clone().unwrap()),
        }
        counts.sessions.fetch_add(1, Relaxed);
        if s % 50 == 0 {
            wss_heavy(addr, config.clone(), counts);
        }
        s += 1;
    }
}

/// Over wss://: a peer that sends and never reads (the server stops reading it), then one that
/// reads its echoes slowly (all must arrive).
fn wss_heavy(addr: SocketAddr, config: Arc<rustls::ClientConfig>, counts: &Counts) {
    if let Ok(mut c) = WssClient::connect(addr, config.clone()) {
        c.stream
            .sock
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let big = vec![9u8; 64 * 1024];
        for _ in 0..256 {
            if c.send(MessageKind::Binary, &big).is_err() {
                break; // blocked: the server stopped reading us
            }
        }
        reset(c.stream.sock.try_clone().unwrap());
    }
    let mut c = WssClient::connect(addr, config).unwrap();
    let msg = vec![3u8; 4096];
    for _ in 0..256 {
        c.send(MessageKind::Binary, &msg).unwrap();
    }
    for i in 0..256 {
        if i % 16 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        match c.recv().unwrap() {
            Event::Binary(b) => assert_eq!(b.len(), msg.len(), "wss slow reader: echo {i}"),
            other => panic!("wss slow reader: unexpected {other:?}"),
        }
    }
    c.close(1000, "").unwrap();
    counts.heavy.fetch_add(1, Relaxed);
}

/// A subscriber: every published number, once, in order, until "end N".
fn subscriber(addr: SocketAddr, id: u64, ready: &AtomicU64, counts: &Counts) -> u64 {
    let mut c = Client::connect(addr).unwrap();
    c.send_text("sub soak").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("ok sub soak".into()));
    ready.fetch_add(1, Relaxed);
    let mut next = 0u64;
    loop {
        match c.recv().unwrap() {
            Event::Text(t) if t.starts_with("end ") => {
                assert_eq!(t, format!("end {next}"), "subscriber {id}: lost the tail");
                break;
            }
            Event::Text(t) => {
                let (num, _) = t.split_once(':').unwrap();
                assert_eq!(num, next.to_string(), "subscriber {id}: lost or reordered");
                next += 1;
                counts.delivered.fetch_add(1, Relaxed);
            }
            Event::Ping(_) => {}
            other => panic!("subscriber {id}: unexpected {other:?}"),
        }
    }
    c.close(1000, "").unwrap();
    next
}

/// Publishes numbered messages until `end`, then "end N"; returns N.
fn publisher(addr: SocketAddr, end: Instant) -> u64 {
    let mut c = Client::connect(addr).unwrap();
    let mut n = 0u64;
    while Instant::now() < end {
        c.send_text(&format!("pub soak {n}:{}", "f".repeat(200)))
            .unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    c.send_text(&format!("pub soak end {n}")).unwrap();
    c.close(1000, "").unwrap();
    n
}

/// One round of every hostile peer.
fn hostile_round(addr: SocketAddr, rng: &mut Rng, counts: &Counts) {
    // Slow handshakes: a few bytes now, the rest never (the server cuts them at its deadline).
    let slow: Vec<_> = (0..20)
        .filter_map(|_| raw_connect(addr).ok())
        .map(|mut s| {
            let _ = s.write_all(&upgrade_request("/").as_bytes()[..10]);
            s
        })
        .collect();
    // Junk instead of a handshake.
    let mut junk = rng.bytes(500);
    junk[0] |= 0x80;
    junk.extend_from_slice(b"\r\n\r\n");
    let answer = common::http(addr, &String::from_utf8_lossy(&junk)).unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 400"), "junk: {answer}");
    // An unmasked frame, and a frame claiming 1 GiB.
    for (bytes, code) in [
        (raw_frame(0x81, b"unmasked", None), 1002),
        (
            [
                &[0x82u8, 0xff][..],
                &(1u64 << 30).to_be_bytes(),
                &[1, 2, 3, 4],
            ]
            .concat(),
            1009,
        ),
    ] {
        let mut c = Client::connect(addr).unwrap();
        c.send_raw(&bytes).unwrap();
        assert_eq!(c.recv_close().unwrap().0, code);
        c.read_to_eof().unwrap();
    }
    // A reset in the middle of a frame.
    if let Ok(mut s) = raw_upgrade(addr) {
        let _ = s.write_all(&raw_frame(0x82, &[0u8; 3000], MASK)[..700]);
        reset(s);
    }
    // Held past the server's handshake deadline (soak.sh sets it to 2 s).
    std::thread::sleep(Duration::from_secs(3));
    drop(slow);
    counts.hostile.fetch_add(1, Relaxed);
}

#[test]
#[ignore = "the soak client: run by scripts/soak.sh against servers it started"]
fn soak_client() {
    let echo_addr = env_addr("SOAK_ECHO_ADDR");
    let pubsub_addr = env_addr("SOAK_PUBSUB_ADDR");
    let secs: u64 = std::env::var("SOAK_SECS").map_or(60, |s| s.parse().unwrap());
    let end = Instant::now() + Duration::from_secs(secs);
    let counts = Arc::new(Counts::default());
    let mut threads = Vec::new();
    let echoes: Vec<_> = (0..4)
        .map(|id| {
            let counts = counts.clone();
            std::thread::spawn(move || {
                echo(Client::connect(echo_addr).unwrap(), "e", id, end, &counts)
            })
        })
        .collect();
    {
        let counts = counts.clone();
        threads.push(std::thread::spawn(move || {
            while Instant::now() < end {
                heavy_round(echo_addr, &counts);
            }
        }));
    }
    for id in 0..2 {
        let counts = counts.clone();
        threads.push(std::thread::spawn(move || {
            churn(echo_addr, id, end, &counts)
        }));
    }
    {
        let counts = counts.clone();
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::new(0x4057);
            while Instant::now() < end {
                hostile_round(echo_addr, &mut rng, &counts);
            }
        }));
    }
    let wss_echoes: Vec<_> = match wss_target() {
        Some((addr, config)) => {
            let counts2 = counts.clone();
            let c2 = config.clone();
            threads.push(std::thread::spawn(move || {
                wss_churn(addr, c2, end, &counts2)
            }));
            (0..2)
                .map(|id| {
                    let (counts, config) = (counts.clone(), config.clone());
                    std::thread::spawn(move || {
                        let c = WssClient::connect(addr, config).unwrap();
                        echo(c, "w", id, end, &counts)
                    })
                })
                .collect()
        }
        None => Vec::new(),
    };
    let ready = Arc::new(AtomicU64::new(0));
    let subs: Vec<_> = (0..16)
        .map(|id| {
            let (counts, ready) = (counts.clone(), ready.clone());
            std::thread::spawn(move || subscriber(pubsub_addr, id, &ready, &counts))
        })
        .collect();
    assert!(hostile::eventually(common::READ_TIMEOUT, || ready
        .load(Relaxed)
        == 16));
    let published = publisher(pubsub_addr, end);
    for s in subs {
        assert_eq!(s.join().unwrap(), published, "a subscriber lost messages");
    }
    for t in threads {
        t.join().unwrap();
    }
    print_windows("ws", echoes);
    print_windows("wss", wss_echoes);
    println!(
        "soak client: {} echoes checked, {} churn sessions, {} published x 16 subscribers = {} \
         deliveries, {} hostile rounds, {} heavy rounds (non-reader, slow reader, ping flood), \
         0 lost",
        counts.echoed.load(Relaxed),
        counts.sessions.load(Relaxed),
        published,
        counts.delivered.load(Relaxed),
        counts.hostile.load(Relaxed),
        counts.heavy.load(Relaxed),
    );
    assert_eq!(counts.delivered.load(Relaxed), published * 16);
}

/// Merges the echo threads' windows and prints one latency line per window.
fn print_windows(transport: &str, echoes: Vec<std::thread::JoinHandle<Windows>>) {
    let mut windows = Windows::new();
    for t in echoes {
        for (i, h) in t.join().unwrap().into_iter().enumerate() {
            if windows.len() <= i {
                windows.push(hdrhistogram::Histogram::new(3).unwrap());
            }
            windows[i].add(h).unwrap();
        }
    }
    let w = window_s();
    for (i, h) in windows.iter().enumerate() {
        println!(
            "soak latency {transport} {}-{} s: {} echoes, p50 {} us, p99 {} us, p99.9 {} us, \
             max {} us",
            i as u64 * w,
            (i as u64 + 1) * w,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}
