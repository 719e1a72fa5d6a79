//! `wss://` end to end: ringws with rustls's unbuffered server API against rustls's own client,
//! over loopback, with certificates made by rcgen in the test.

mod common;
#[path = "common/tls.rs"]
mod tls;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::AtomicU64;

use common::{Event, serve, test_config};
use ringws::metrics::WorkerMetrics;
use ringws::modes::Echo;
use ringws::proto::connection::MessageKind;
use ringws::{Config, ServerHandle};
use rustls::ContentType;
use rustls::pki_types::ServerName;
use tls::{RawTls12, Record, WssClient, client_hello, setup, tls12, tls12_raw, tls13};

fn tls_server(tag: &str, tune: impl FnOnce(&mut Config)) -> (tls::Ca, ServerHandle) {
    let (ca, settings, _dir) = setup(tag);
    let mut cfg = test_config();
    cfg.tls = Some(settings);
    tune(&mut cfg);
    (ca, serve(cfg, |_| Echo))
}

fn total(s: &ServerHandle, f: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
    s.metrics().total(f)
}

/// Text, binary, and messages larger than a receive buffer and a TLS record (so records
/// straddle receive buffers and the spill is exercised), then a clean close.
fn echo_round(c: &mut WssClient) {
    c.send(MessageKind::Text, b"hello over tls").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("hello over tls".into()));
    c.send(MessageKind::Binary, &[0, 1, 2, 255]).unwrap();
    assert_eq!(c.recv().unwrap(), Event::Binary(vec![0, 1, 2, 255]));
    for len in [16_000, 16_384, 70_000, 300_001] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        c.send(MessageKind::Binary, &payload).unwrap();
        assert_eq!(c.recv().unwrap(), Event::Binary(payload), "length {len}");
    }
    c.close(1000, "bye").unwrap();
    assert!(matches!(c.recv().unwrap(), Event::Close(1000, _)));
    assert!(
        c.read_to_end().unwrap(),
        "the server ends TLS with close_notify before TCP"
    );
}

#[test]
fn echo_over_tls13_and_tls12() {
    let (ca, s) = tls_server("echo", |_| {});
    for (config, version) in [
        (tls13(&ca), rustls::ProtocolVersion::TLSv1_3),
        (tls12(&ca), rustls::ProtocolVersion::TLSv1_2),
    ] {
        let mut c = WssClient::connect(s.local_addr(), config).unwrap();
        assert_eq!(c.stream.conn.protocol_version(), Some(version));
        assert_eq!(c.stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        echo_round(&mut c);
    }
    assert_eq!(total(&s, |w| &w.tls_handshakes), 2);
    assert_eq!(total(&s, |w| &w.tls_errors), 0);
    s.shutdown();
    s.join().unwrap();
}

/// Every byte the server sends until it ends the connection.
fn answer(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    match stream.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading the answer: {e}"),
    }
    out
}

fn raw(s: &ServerHandle) -> TcpStream {
    let t = TcpStream::connect(s.local_addr()).unwrap();
    t.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    t
}

/// A TLS alert record (content type 21), fatal (level 2), with this description.
fn is_alert(bytes: &[u8], description: u8) -> bool {
    bytes.len() >= 7 && bytes[0] == 21 && bytes[5] == 2 && bytes[6] == description
}

#[test]
fn plaintext_http_on_the_tls_port_gets_a_400() {
    let (_ca, s) = tls_server("plain", |_| {});
    let mut t = raw(&s);
    t.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    let text = String::from_utf8_lossy(&answer(&mut t)).into_owned();
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("wss://"), "{text}");
    assert_eq!(total(&s, |w| &w.tls_plaintext_http), 1);
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn bad_records_get_an_alert_and_a_close() {
    let (_ca, s) = tls_server("alerts", |_| {});
    // A handshake record whose body is no ClientHello: unexpected_message (10).
    let mut t = raw(&s);
    t.write_all(&[22, 3, 1, 0, 5, 0xff, 0, 0, 1, 7]).unwrap();
    let a = answer(&mut t);
    assert!(is_alert(&a, 10), "{a:?}");
    // A header declaring more than TLS allows (rustls answers decode_error, 50).
    let mut t = raw(&s);
    t.write_all(&[22, 3, 1, 0xff, 0xff]).unwrap();
    let a = answer(&mut t);
    assert!(is_alert(&a, 50), "{a:?}");
    // A content type that does not exist: unexpected_message (10) or decode_error.
    let mut t = raw(&s);
    t.write_all(&[99, 3, 3, 0, 1, 0]).unwrap();
    let a = answer(&mut t);
    assert!(a.is_empty() || a[0] == 21, "{a:?}");
    assert_eq!(total(&s, |w| &w.tls_errors), 3);
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn random_bytes_instead_of_a_client_hello_end_the_connection() {
    let (_ca, s) = tls_server("random", |c| c.handshake_timeout_ms = 300);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    println!("seed {seed:#x}");
    let n = 40;
    let mut socks = Vec::new();
    for _ in 0..n {
        let bytes: Vec<u8> = (0..200)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let mut t = raw(&s);
        t.write_all(&bytes).unwrap();
        socks.push(t);
    }
    for t in &mut socks {
        let a = answer(t);
        assert!(
            a.is_empty() || a[0] == 21,
            "only an alert may come back: {a:?}"
        );
    }
    // Each ended by an alert (bad record) or, when the bytes could be the start of a record,
    // by the handshake timeout.
    let ended = total(&s, |w| &w.tls_errors) + total(&s, |w| &w.tls_handshake_timeouts);
    assert_eq!(ended, n);
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn a_trickled_client_hello_is_gathered_and_a_stalled_one_times_out() {
    let (ca, s) = tls_server("trickle", |c| c.handshake_timeout_ms = 2000);
    let hello = client_hello(tls13(&ca));
    // One byte per write: the spill gathers the record.
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(tls13(&ca), name).unwrap();
    let mut first = Vec::new();
    conn.write_tls(&mut first).unwrap();
    let mut t = raw(&s);
    t.set_nodelay(true).unwrap();
    for b in &first {
        t.write_all(std::slice::from_ref(b)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let mut stream = rustls::StreamOwned::new(conn, t);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    let mut c = WssClient::upgrade(stream).unwrap();
    c.send(MessageKind::Text, b"trickled").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("trickled".into()));
    // Half a ClientHello, then silence: the handshake timeout ends it.
    let mut t = raw(&s);
    t.write_all(&hello[..hello.len() / 2]).unwrap();
    assert!(answer(&mut t).is_empty());
    assert_eq!(total(&s, |w| &w.tls_handshake_timeouts), 1);
    assert_eq!(total(&s, |w| &w.tls_handshakes), 1);
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn half_done_handshakes_are_bounded_by_the_pending_limit() {
    let pending = 8;
    let (ca, s) = tls_server("flood", |c| {
        c.handshakes_pending_per_worker_max = pending;
        c.handshake_timeout_ms = 1500;
    });
    let hello = client_hello(tls13(&ca));
    let flood = 30;
    let mut socks: Vec<TcpStream> = (0..flood)
        .map(|_| {
            let mut t = raw(&s);
            t.write_all(&hello[..hello.len() / 2]).unwrap();
            t
        })
        .collect();
    for t in &mut socks {
        assert!(answer(t).is_empty());
    }
    let refused = total(&s, |w| &w.tls_refused);
    let timed_out = total(&s, |w| &w.tls_handshake_timeouts);
    assert_eq!(refused + timed_out, u64::from(flood));
    assert!(
        timed_out <= u64::from(pending),
        "{timed_out} pending at once"
    );
    assert!(refused >= u64::from(flood - pending));
    // Once they are gone, a real client gets through.
    let mut c = WssClient::connect(s.local_addr(), tls13(&ca)).unwrap();
    c.send(MessageKind::Text, b"after the flood").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("after the flood".into()));
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn close_notify_from_the_client_is_answered_and_ends_the_connection() {
    let (ca, s) = tls_server("notify", |_| {});
    let mut c = WssClient::connect(s.local_addr(), tls13(&ca)).unwrap();
    c.send(MessageKind::Text, b"x").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("x".into()));
    c.stream.conn.send_close_notify();
    c.stream.flush().unwrap();
    assert!(
        c.read_to_end().unwrap(),
        "the server answers with its close_notify"
    );
    assert_eq!(total(&s, |w| &w.tls_close_notify_received), 1);
    // The WebSocket ended without a Close frame: reported as 1006.
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn key_updates_from_the_client_keep_traffic_flowing() {
    let (ca, s) = tls_server("keyupdate", |_| {});
    let mut c = WssClient::connect(s.local_addr(), tls13(&ca)).unwrap();
    for i in 0..3 {
        c.stream.conn.refresh_traffic_keys().unwrap();
        let msg = format!("after key update {i}");
        c.send(MessageKind::Text, msg.as_bytes()).unwrap();
        assert_eq!(c.recv().unwrap(), Event::Text(msg));
    }
    c.close(1000, "").unwrap();
    assert!(matches!(c.recv().unwrap(), Event::Close(1000, _)));
    assert!(c.read_to_end().unwrap());
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn sessions_resume_with_tickets_on_tls13_and_tls12() {
    let (ca, s) = tls_server("resume", |_| {});
    for config in [tls13(&ca), tls12(&ca)] {
        // The same client configuration keeps the tickets it was given.
        let mut first = WssClient::connect(s.local_addr(), config.clone()).unwrap();
        assert_eq!(
            first.stream.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        echo_round(&mut first);
        let mut again = WssClient::connect(s.local_addr(), config).unwrap();
        assert_eq!(
            again.stream.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        echo_round(&mut again);
    }
    assert_eq!(total(&s, |w| &w.tls_handshakes), 4);
    assert_eq!(total(&s, |w| &w.tls_resumed), 2);
    s.shutdown();
    s.join().unwrap();
}

fn leaf(stream: &tls::TlsStream) -> Vec<u8> {
    stream.conn.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn certificates_are_chosen_by_sni() {
    let dir = tls::temp_dir("sni");
    let ca = tls::Ca::new("sni CA");
    let default = ca.issue(&["localhost"]);
    let other = ca.issue(&["other.test"]);
    let (dc, dk) = tls::write_pair(&dir, "default", &default);
    let (oc, ok) = tls::write_pair(&dir, "other", &other);
    let mut settings = ringws::TlsSettings::new(dc, dk);
    settings.sni.push((
        "Other.Test".into(),
        ringws::TlsCertFiles { cert: oc, key: ok },
    ));
    let mut cfg = test_config();
    cfg.tls = Some(settings);
    let s = serve(cfg, |_| Echo);
    let t = tls::connect_tls(s.local_addr(), tls13(&ca), "other.test").unwrap();
    assert_eq!(
        leaf(&t),
        der(&other.0),
        "the SNI name picks its certificate"
    );
    let t = tls::connect_tls(s.local_addr(), tls13(&ca), "localhost").unwrap();
    assert_eq!(leaf(&t), der(&default.0), "any other name gets the default");
    // A name that neither certificate covers gets the default one, which the client refuses.
    assert!(tls::connect_tls(s.local_addr(), tls13(&ca), "nobody.test").is_err());
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn reload_serves_new_certificates_to_new_handshakes_and_refuses_bad_files() {
    let (old_ca, settings, dir) = setup("reload");
    let (cert_path, key_path) = (settings.default.cert.clone(), settings.default.key.clone());
    let mut cfg = test_config();
    cfg.tls = Some(settings);
    let s = serve(cfg, |_| Echo);
    let mut live = WssClient::connect(s.local_addr(), tls13(&old_ca)).unwrap();
    let new_ca = tls::Ca::new("the new CA");
    let fresh = new_ca.issue(&["localhost"]);
    tls::write_pair(&dir, "server", &fresh);
    s.reload_tls().unwrap();
    let t = tls::connect_tls(s.local_addr(), tls13(&new_ca), "localhost").unwrap();
    assert_eq!(leaf(&t), der(&fresh.0));
    assert!(
        tls::connect_tls(s.local_addr(), tls13(&old_ca), "localhost").is_err(),
        "the old certificate is no longer served"
    );
    // The connection made before the reload goes on.
    live.send(MessageKind::Text, b"still here").unwrap();
    assert_eq!(live.recv().unwrap(), Event::Text("still here".into()));
    // A file that is not PEM, and a key that belongs to another certificate, are refused and
    // the certificate in use stays.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    let e = s.reload_tls().unwrap_err().to_string();
    assert!(e.contains(&cert_path.display().to_string()), "{e}");
    std::fs::write(&cert_path, &fresh.0).unwrap();
    std::fs::write(&key_path, new_ca.issue(&["localhost"]).1).unwrap();
    let e = s.reload_tls().unwrap_err().to_string();
    assert!(e.contains("do not belong together"), "{e}");
    let t = tls::connect_tls(s.local_addr(), tls13(&new_ca), "localhost").unwrap();
    assert_eq!(leaf(&t), der(&fresh.0), "the last good certificate stays");
    s.shutdown();
    s.join().unwrap();
}

#[test]
fn sighup_reloads_the_binary_and_a_bad_file_is_logged_and_refused() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let (ca, settings, dir) = setup("sighup");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringws"))
        .args(["serve", "--port", "0", "--workers", "1", "--no-pin"])
        .arg("--tls-cert")
        .arg(&settings.default.cert)
        .arg("--tls-key")
        .arg(&settings.default.key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = io::BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening on wss://")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    let mut err = io::BufReader::new(child.stderr.take().unwrap());
    let hup = |child: &std::process::Child| {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGHUP) }, 0);
    };
    let fresh_ca = tls::Ca::new("after SIGHUP");
    tls::write_pair(&dir, "server", &fresh_ca.issue(&["localhost", "127.0.0.1"]));
    hup(&child);
    let mut log = String::new();
    err.read_line(&mut log).unwrap();
    assert!(log.contains("TLS certificates reloaded"), "{log}");
    tls::connect_tls(addr, tls13(&fresh_ca), "localhost").unwrap();
    std::fs::write(&settings.default.key, "garbage").unwrap();
    hup(&child);
    log.clear();
    err.read_line(&mut log).unwrap();
    assert!(log.contains("TLS reload refused"), "{log}");
    assert!(log.contains("server.key"), "the line names the file: {log}");
    tls::connect_tls(addr, tls13(&fresh_ca), "localhost").unwrap();
    drop(ca);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
}

#[test]
fn broadcast_frames_are_encrypted_for_each_subscriber() {
    let (ca, settings, _dir) = setup("broadcast");
    let mut cfg = test_config();
    cfg.tls = Some(settings);
    let s = serve(cfg, |_| ringws::modes::Broadcast);
    let mut clients: Vec<WssClient> = (0..3)
        .map(|_| WssClient::connect(s.local_addr(), tls13(&ca)).unwrap())
        .collect();
    // Small frames are copied into each queue, large ones shared by reference: both are sealed
    // per connection.
    for payload in [vec![b's'; 100], vec![b'L'; 40_000]] {
        clients[0].send(MessageKind::Binary, &payload).unwrap();
        for c in &mut clients {
            assert_eq!(c.recv().unwrap(), Event::Binary(payload.clone()));
        }
    }
    s.shutdown();
    s.join().unwrap();
}

/// A TLS 1.2 connection past its handshake and one echo, taken over from rustls (the test
/// seals and opens its records from here on).
fn raw_tls12(s: &ServerHandle, ca: &tls::Ca) -> RawTls12 {
    let mut c = WssClient::connect(s.local_addr(), tls12_raw(ca)).unwrap();
    c.send(MessageKind::Text, b"before").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("before".into()));
    c.into_raw_tls12()
}

/// The handshake message of a fresh TLS 1.2 ClientHello (the record's body), to be sent inside
/// an established connection as a client-initiated renegotiation.
fn renegotiation_hello(ca: &tls::Ca) -> Vec<u8> {
    let hello = client_hello(tls12(ca));
    assert_eq!(hello[0], 22, "a handshake record");
    assert_eq!(hello[5], 1, "holding a ClientHello");
    hello[5..].to_vec()
}

/// The `no_renegotiation` warning alert: level 1 (warning), description 100.
const NO_RENEGOTIATION: [u8; 2] = [1, 100];

/// Reads until the server ends TCP: the records it sent first (a reset counts as the end).
fn records_until_closed(raw: &mut RawTls12) -> Vec<Record> {
    let mut got = Vec::new();
    loop {
        match raw.read_record() {
            Ok(r) => got.push(r),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                return got;
            }
            Err(e) => panic!("reading the server's records: {e}"),
        }
    }
}

fn echo(c: &mut WssClient, msg: &str) {
    c.send(MessageKind::Text, msg.as_bytes()).unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text(msg.into()));
}

/// A client-initiated TLS 1.2 renegotiation, as rustls 0.23 answers it (`common_state.rs`,
/// `TemperCounters`): the first ClientHello after the handshake gets a `no_renegotiation`
/// warning alert and the connection goes on; the second is fatal to the connection
/// (`TooManyRenegotiationRequests`), which ends without an alert (rustls queues none for it).
/// Another connection echoes throughout.
#[test]
fn a_tls12_renegotiation_is_refused_with_a_warning_and_a_second_one_ends_the_connection() {
    let (ca, s) = tls_server("reneg", |_| {});
    let mut bystander = WssClient::connect(s.local_addr(), tls13(&ca)).unwrap();
    let mut raw = raw_tls12(&s, &ca);
    let hello = renegotiation_hello(&ca);
    raw.send_record(ContentType::Handshake, &hello).unwrap();
    let answer = raw.read_record().unwrap();
    assert_eq!(
        answer,
        Record {
            typ: ContentType::Alert,
            plain: NO_RENEGOTIATION.to_vec()
        }
    );
    // The connection goes on: a message after the refusal is echoed.
    raw.send_message(MessageKind::Text, b"after the refusal")
        .unwrap();
    let rec = raw.read_record().unwrap();
    assert_eq!(rec.typ, ContentType::ApplicationData);
    assert_eq!(
        raw.take_events(&rec.plain),
        vec![Event::Text("after the refusal".into())]
    );
    echo(&mut bystander, "meanwhile");
    assert_eq!(total(&s, |w| &w.tls_errors), 0);
    // The second attempt: the connection ends, with nothing more sent.
    raw.send_record(ContentType::Handshake, &hello).unwrap();
    assert_eq!(records_until_closed(&mut raw), vec![]);
    assert_eq!(total(&s, |w| &w.tls_errors), 1);
    echo(&mut bystander, "still echoing");
    s.shutdown();
    s.join().unwrap();
}

/// A renegotiation flood: many connections each send hundreds of ClientHellos in one burst.
/// Each costs the server one warning alert and then the connection (the rest is never
/// parsed); the server answers nothing else and keeps echoing for a bystander.
#[test]
fn a_renegotiation_flood_costs_one_warning_then_the_connection() {
    let (ca, s) = tls_server("renegflood", |_| {});
    let mut bystander = WssClient::connect(s.local_addr(), tls13(&ca)).unwrap();
    let hello = renegotiation_hello(&ca);
    let (conns, attempts) = (16, 300);
    let mut raws: Vec<RawTls12> = (0..conns).map(|_| raw_tls12(&s, &ca)).collect();
    for raw in &mut raws {
        let burst: Vec<u8> = (0..attempts)
            .flat_map(|_| raw.seal(ContentType::Handshake, &hello))
            .collect();
        // The server may close while the burst is still being written.
        let _ = raw.sock.write_all(&burst);
    }
    echo(&mut bystander, "during the flood");
    for raw in &mut raws {
        assert_eq!(
            records_until_closed(raw),
            vec![Record {
                typ: ContentType::Alert,
                plain: NO_RENEGOTIATION.to_vec()
            }],
            "one warning, then the end"
        );
    }
    assert_eq!(total(&s, |w| &w.tls_errors), conns);
    echo(&mut bystander, "after the flood");
    s.shutdown();
    s.join().unwrap();
}
