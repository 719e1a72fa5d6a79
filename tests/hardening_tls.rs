//! The hardening suite's hostile peers over `wss://` (#12): resets in the middle of a TLS
//! handshake, an upgrade, a message and with many sends queued; a slowloris that trickles its
//! upgrade request inside TLS; a ping flood and non-readers against the memory budget (both on
//! a server child, whose RSS is its own); oversized frames and messages. Each peer is the one of
//! the plain `ws://` suite (tests/hardening_*.rs), over TLS; the same answers are expected.
mod common;
#[path = "common/hostile.rs"]
mod hostile;
#[path = "common/tls.rs"]
mod tls;

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Event, READ_TIMEOUT, serve, test_config};
use hostile::{
    Flood, Pump, Reap, assert_baseline_in_process, eventually, parse_metrics, raw_connect,
    raw_frame, reset, rss_bytes, sock_buf, spawn_server, upgrade_request,
};
use ringws::modes::Echo;
use ringws::proto::connection::MessageKind;
use ringws::{Config, ServerHandle};
use rustls::ClientConnection;
use tls::{Ca, WssClient, client_hello, connect_tls, https, setup, tls12, tls13};

const MASK: Option<[u8; 4]> = Some([0xa1, 0xb2, 0xc3, 0xd4]);

fn tls_server(tag: &str, tune: impl FnOnce(&mut Config)) -> (Ca, ServerHandle) {
    let (ca, settings, _dir) = setup(tag);
    let mut cfg = test_config();
    cfg.tls = Some(settings);
    tune(&mut cfg);
    (ca, serve(cfg, |_| Echo))
}

fn echo(c: &mut WssClient, msg: &str) {
    c.send(MessageKind::Text, msg.as_bytes()).unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text(msg.into()));
}

/// Ends a client with a clean close, then checks that nothing leaked.
fn finish(mut bystander: WssClient, s: ServerHandle, scenario: &str) {
    bystander.close(1000, "").unwrap();
    assert!(matches!(bystander.recv().unwrap(), Event::Close(1000, _)));
    drop(bystander);
    assert_baseline_in_process(&s, scenario);
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn resets_mid_handshake_mid_message_and_with_sends_queued_leak_nothing() {
    let (ca, s) = tls_server("resets", |c| c.handshake_timeout_ms = 5000);
    let addr = s.local_addr();
    let mut bystander = WssClient::connect(addr, tls13(&ca)).unwrap();
    // In the TLS handshake: after 1 byte, a record header, half and all of the ClientHello.
    let hello = client_hello(tls13(&ca));
    for cut in [1, 5, hello.len() / 2, hello.len()] {
        let mut t = raw_connect(addr).unwrap();
        t.write_all(&hello[..cut]).unwrap();
        reset(t);
    }
    // TLS done, half an upgrade request inside it.
    let mut t = connect_tls(addr, tls12(&ca), "localhost").unwrap();
    t.write_all(&upgrade_request("/").as_bytes()[..30]).unwrap();
    reset(t.into_parts().1);
    echo(&mut bystander, "after the handshake resets");
    // In the middle of a message (the frame is cut inside a TLS record and between records).
    for (config, cut) in [(tls13(&ca), 100), (tls12(&ca), 40_000)] {
        let mut c = WssClient::connect(addr, config).unwrap();
        let f = raw_frame(0x82, &[9u8; 50_000], MASK);
        c.stream.write_all(&f[..cut]).unwrap();
        reset(c.stream.into_parts().1);
    }
    // Many echoes queued for a peer that reads none of them, then a reset.
    let mut c = WssClient::connect(addr, tls13(&ca)).unwrap();
    sock_buf(&c.stream.sock, libc::SO_RCVBUF, 4096);
    c.stream
        .sock
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let big = vec![0x42u8; 256 * 1024];
    for _ in 0..32 {
        // The server stops reading once its queue for us is past the high mark: then our
        // writes time out, and enough is queued.
        if c.send(MessageKind::Binary, &big).is_err() {
            break;
        }
    }
    reset(c.stream.into_parts().1);
    echo(&mut bystander, "after the resets");
    assert_eq!(
        s.metrics().total(|w| &w.tls_errors),
        0,
        "a reset is no TLS error"
    );
    finish(bystander, s, "resets over TLS");
}

/// A slowloris inside TLS: the TLS handshake is done at once, then the upgrade request goes
/// one byte per TLS record, one byte per peer every 100 ms. The handshake timer (1.5 s) cuts
/// every one of them before its request is whole (it is ~150 bytes), none gets an answer, and
/// a normal client echoes meanwhile.
#[test]
fn a_slowloris_inside_tls_is_cut_by_the_handshake_timer() {
    const SLOW: usize = 40;
    let (ca, s) = tls_server("slowloris", |c| c.handshake_timeout_ms = 1500);
    let addr = s.local_addr();
    let request = upgrade_request("/").into_bytes();
    let mut slow: Vec<(tls::TlsStream, usize, bool)> = (0..SLOW)
        .map(|_| {
            let t = connect_tls(addr, tls13(&ca), "localhost").unwrap();
            t.sock.set_nonblocking(true).unwrap();
            (t, 0, false)
        })
        .collect();
    let normal = std::thread::spawn({
        let config = tls13(&ca);
        move || {
            let mut c = WssClient::connect(addr, config).unwrap();
            echo(&mut c, "through the slow crowd");
            c
        }
    });
    let start = Instant::now();
    while slow.iter().any(|(_, _, cut)| !cut) && start.elapsed() < READ_TIMEOUT {
        for (t, sent, cut) in slow.iter_mut().filter(|(_, _, cut)| !cut) {
            if *sent < request.len() {
                match t.write(&request[*sent..=*sent]) {
                    Ok(n) => *sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => *cut = true,
                }
            }
            let mut buf = [0u8; 512];
            match t.read(&mut buf) {
                Ok(0) => *cut = true,
                Ok(n) => panic!(
                    "a slow peer got an answer: {}",
                    String::from_utf8_lossy(&buf[..n])
                ),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *cut = true,
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, (_, sent, cut)) in slow.iter().enumerate() {
        assert!(*cut, "slow peer {i} never cut");
        assert!(
            *sent < request.len(),
            "slow peer {i} sent its whole request"
        );
    }
    let bystander = normal.join().unwrap();
    let m = s.metrics();
    assert_eq!(m.total(|w| &w.tls_handshakes), SLOW as u64 + 1);
    assert_eq!(
        m.total(|w| &w.tls_handshake_timeouts),
        0,
        "the TLS handshakes were done: the upgrade timed out"
    );
    drop(slow);
    finish(bystander, s, "slowloris inside TLS");
}

/// Frames and messages past the limits get the close codes they get over `ws://`
/// (tests/hardening_limits.rs): 1009 for a frame, a message or too many fragments over the
/// limit, 1002 for an unmasked frame; each then ends with close_notify.
#[test]
fn oversized_frames_and_messages_get_the_same_close_codes_as_over_ws() {
    let (ca, s) = tls_server("limits", |c| {
        c.frame_bytes_max = 1000;
        c.message_bytes_max = 4000;
        c.message_fragments_max = 8;
    });
    let addr = s.local_addr();
    let frame = |first: u8, n: usize| raw_frame(first, &vec![1u8; n], MASK);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("one frame over the frame limit", frame(0x82, 1001), 1009),
        (
            "a message over the message limit",
            [
                vec![frame(0x02, 1000)],
                vec![frame(0x00, 1000); 3],
                vec![frame(0x80, 1)],
            ]
            .concat()
            .concat(),
            1009,
        ),
        (
            "too many fragments",
            [
                vec![frame(0x01, 1)],
                vec![frame(0x00, 1); 8],
                vec![frame(0x80, 1)],
            ]
            .concat()
            .concat(),
            1009,
        ),
        ("an unmasked frame", raw_frame(0x82, b"x", None), 1002),
    ];
    for (config, version) in [(tls13(&ca), "1.3"), (tls12(&ca), "1.2")] {
        for (what, bytes, code) in &cases {
            let mut c = WssClient::connect(addr, config.clone()).unwrap();
            // Within the limits first: echoed.
            let ok = vec![3u8; 1000];
            c.send(MessageKind::Binary, &ok).unwrap();
            assert_eq!(c.recv().unwrap(), Event::Binary(ok));
            c.stream.write_all(bytes).unwrap();
            match c.recv().unwrap() {
                Event::Close(got, _) => assert_eq!(got, *code, "{what} over TLS {version}"),
                other => panic!("{what} over TLS {version}: {other:?}"),
            }
            assert!(
                c.read_to_end().unwrap(),
                "{what}: close_notify, then the end"
            );
        }
    }
    assert_eq!(s.metrics().closes_with(1009), 6);
    assert_eq!(s.metrics().closes_with(1002), 2);
    assert_baseline_in_process(&s, "limits over TLS");
    s.shutdown();
    s.join().unwrap();
}

/// `ringws serve` over TLS as a child (its RSS is its own), and a client config trusting it.
fn tls_child(tag: &str, extra: &[&str]) -> (Reap, SocketAddr, Arc<rustls::ClientConfig>) {
    let (ca, settings, _dir) = setup(tag);
    let (cert, key) = (
        settings.default.cert.display().to_string(),
        settings.default.key.display().to_string(),
    );
    let mut args = vec!["--workers", "1", "--tls-cert", &cert, "--tls-key", &key];
    args.extend_from_slice(extra);
    let (child, addr) = spawn_server(&args);
    (Reap(child), addr, tls13(&ca))
}

/// The child's metrics, read over TLS (its port answers plaintext HTTP with a 400).
fn metrics_tls(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> HashMap<String, u64> {
    let text = https(
        addr,
        config.clone(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap_or_default();
    parse_metrics(text.split_once("\r\n\r\n").map_or("", |(_, b)| b))
}

/// A ping flood over TLS from a peer that never reads (tests/hardening_pingflood.rs): the
/// pongs it is owed stop the server reading from it, or close it; the server's RSS grows by
/// nowhere near the pongs asked for.
#[test]
fn a_ping_flood_over_tls_keeps_the_servers_memory_bounded() {
    const FLOOD_BYTES: usize = 48 << 20;
    let (child, addr, config) = tls_child(
        "pingflood",
        &[
            "--send-queue-bytes-max",
            "65536",
            "--send-queue-high-bytes",
            "32768",
            "--send-queue-low-bytes",
            "8192",
        ],
    );
    let pid = child.0.id();
    let mut c = WssClient::connect(addr, config.clone()).unwrap();
    // Warm-up: 16 MiB of echoes touch the worker's ring of receive buffers (allocated lazily),
    // so that what grows next is what the flood costs.
    let mib = vec![7u8; 1 << 20];
    for _ in 0..16 {
        c.send(MessageKind::Binary, &mib).unwrap();
        assert!(matches!(c.recv().unwrap(), Event::Binary(b) if b.len() == mib.len()));
    }
    c.stream
        .sock
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let batch = raw_frame(0x89, &[7u8; 125], MASK).repeat(1024);
    let before = rss_bytes(pid);
    let (mut sent, mut cut) = (0, false);
    while sent < FLOOD_BYTES {
        if c.stream.write_all(&batch).is_err() {
            // Closed, or the server stopped reading (the write timed out): bounded too.
            cut = true;
            break;
        }
        sent += batch.len();
    }
    let m = || metrics_tls(addr, &config);
    let settled = eventually(READ_TIMEOUT, || {
        let m = m();
        // Everything sent was read (the records' overhead counts in the bytes received), or
        // the server stopped reading from the flood, or closed it.
        cut || m
            .get("ringws_bytes_received_total")
            .is_some_and(|&n| n as usize >= sent)
            || m.get("ringws_reads_pauses_total").is_some_and(|&n| n > 0)
            || m.get("ringws_connections{state=\"open\"}") == Some(&0)
    });
    let grown_mib = rss_bytes(pid).saturating_sub(before) >> 20;
    eprintln!(
        "sent {} MiB of pings over TLS (cut: {cut}); server RSS grew {grown_mib} MiB",
        sent >> 20
    );
    assert!(
        settled,
        "the server neither read, paused nor closed the flood"
    );
    assert!(
        grown_mib < 24,
        "the server holds the pongs of a peer that never reads: RSS +{grown_mib} MiB"
    );
}

/// A TLS non-reader: rustls's client on a non-blocking socket, handed the same masked frame
/// over and over; it never reads the socket (nothing it receives is even decrypted).
struct TlsPump {
    conn: ClientConnection,
    sock: TcpStream,
    frame: Arc<Vec<u8>>,
    at: usize,
}

impl Pump for TlsPump {
    fn pump(&mut self) -> io::Result<usize> {
        if !self.conn.wants_write() {
            let n = self.conn.writer().write(&self.frame[self.at..])?;
            self.at = (self.at + n) % self.frame.len();
        }
        self.conn.write_tls(&mut self.sock)
    }
}

/// Non-readers over TLS against the memory budget (tests/hardening_budget.rs, smaller): 200
/// clients send 256 KiB messages for 5 s and read nothing; the server's RSS stays within
/// `--memory-budget-bytes`, and a well-behaved client still gets its echoes.
#[test]
fn non_readers_over_tls_stay_within_the_memory_budget() {
    const BUDGET_BYTES: u64 = 128 << 20;
    const CLIENTS: usize = 200;
    const FLOOD: Duration = Duration::from_secs(5);
    let budget = BUDGET_BYTES.to_string();
    let (child, addr, config) = tls_child(
        "budget",
        &[
            "--memory-budget-bytes",
            &budget,
            "--close-timeout-ms",
            "2000",
        ],
    );
    let pid = child.0.id();
    let mut good = WssClient::connect(addr, config.clone()).unwrap();
    let mib = vec![7u8; 1 << 20];
    for _ in 0..16 {
        good.send(MessageKind::Binary, &mib).unwrap();
        assert!(matches!(good.recv().unwrap(), Event::Binary(b) if b.len() == mib.len()));
    }
    let steady = rss_bytes(pid);
    let frame = Arc::new(raw_frame(0x82, &vec![0x5a; 256 * 1024], Some([0; 4])));
    let peers: Vec<TlsPump> = (0..CLIENTS)
        .map(|_| {
            let c = WssClient::connect(addr, config.clone()).unwrap();
            let (conn, sock) = c.stream.into_parts();
            sock.set_nonblocking(true).unwrap();
            TlsPump {
                conn,
                sock,
                frame: frame.clone(),
                at: 0,
            }
        })
        .collect();
    let flood = Flood::start(peers);
    let start = Instant::now();
    let (mut rss_max, mut n) = (0u64, 0);
    while start.elapsed() < FLOOD {
        rss_max = rss_max.max(rss_bytes(pid));
        echo(&mut good, &format!("ping {n}"));
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = metrics_tls(addr, &config);
    let sent_mib = flood.stop() >> 20;
    eprintln!(
        "TLS non-readers sent {sent_mib} MiB; server RSS {} MiB steady, {} MiB max (budget {} \
         MiB); {} closes 1013, {} read pauses; {n} echoes",
        steady >> 20,
        rss_max >> 20,
        BUDGET_BYTES >> 20,
        m.get("ringws_memory_budget_closes_total").unwrap_or(&0),
        m.get("ringws_reads_pauses_total").unwrap_or(&0),
    );
    assert!(
        rss_max <= BUDGET_BYTES,
        "server RSS reached {} MiB, past {} MiB",
        rss_max >> 20,
        BUDGET_BYTES >> 20
    );
    assert!(
        sent_mib > BUDGET_BYTES >> 20,
        "the clients sent too little to test the budget"
    );
    echo(&mut good, "after the flood");
}
