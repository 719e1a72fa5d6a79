//! The load generator over `wss://` against a TLS server written here: rustls's *buffered*
//! `ServerConnection` over std TCP, one thread per connection, with the protocol core in the
//! server role echoing every message. So the client's unbuffered TLS glue is checked against an
//! independent use of rustls, and what the server saw (handshakes resumed, alerts received) is
//! counted on the server's side. Certificates come from `rcgen` (made in the test, in memory
//! and in the test's temporary directory: no `openssl` process, same crypto provider as the
//! client). No timing assertions.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use ringws::proto::connection::{Connection, Limits, MessageKind, Role, Sink};
use ringws::proto::frame::HEADER_BYTES_MAX;
use ringws::proto::handshake;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{HandshakeKind, ServerConfig, ServerConnection, StreamOwned};

/// A CA and a certificate for `localhost` and 127.0.0.1 that it signed.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let leaf = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        chain: vec![leaf.der().clone(), ca.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

/// What the server saw, over all its connections.
#[derive(Default)]
struct Seen {
    handshakes_full: AtomicU64,
    handshakes_resumed: AtomicU64,
    alerts_received: AtomicU64,
    messages: AtomicU64,
}

/// The TLS 1.3 (or, with `tls12_only`, TLS 1.2) echo server on a free port of 127.0.0.1.
fn serve(pki: &Pki, tls12_only: bool) -> (u16, Arc<Seen>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), PrivateKeyDer::Pkcs8(pki.key.clone_key()))
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The default stateful session cache resumes TLS 1.2 ids and TLS 1.3 tickets alike.
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let counters = seen.clone();
    thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let (config, seen) = (config.clone(), counters.clone());
            thread::spawn(move || serve_one(tcp, config, &seen));
        }
    });
    (port, seen)
}

/// Frames the core sends and messages to echo, gathered during one `receive`.
#[derive(Default)]
struct Echo {
    out: Vec<u8>,
    messages: Vec<(MessageKind, Vec<u8>)>,
}

impl Sink for Echo {
    fn message(&mut self, kind: MessageKind, payload: &[u8]) {
        self.messages.push((kind, payload.to_vec()));
    }

    fn send_frame(&mut self, frame: &[u8]) {
        self.out.extend_from_slice(frame);
    }
}

fn serve_one(tcp: TcpStream, config: Arc<ServerConfig>, seen: &Seen) {
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let conn = ServerConnection::new(config).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    let mut buf = vec![0u8; 64 * 1024];
    let mut request = Vec::new();
    // The upgrade: read until the blank line, answer 101.
    let rest = loop {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
            Err(e) => return note_error(&e, seen),
        }
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break request.split_off(end + 4);
        }
    };
    match tls.conn.handshake_kind() {
        Some(HandshakeKind::Resumed) => &seen.handshakes_resumed,
        _ => &seen.handshakes_full,
    }
    .fetch_add(1, Ordering::Relaxed);
    let text = String::from_utf8_lossy(&request);
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("a key in the upgrade request");
    let accept = handshake::accept_key(key.trim().as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        std::str::from_utf8(&accept).unwrap()
    );
    if tls.write_all(response.as_bytes()).is_err() {
        return;
    }
    let mut core = Connection::new(Role::Server, Limits::default(), 0);
    let mut pending = rest;
    loop {
        let mut echo = Echo::default();
        if !pending.is_empty() && core.receive(&mut pending, &mut echo).is_err() {
            return;
        }
        pending.clear();
        for (kind, mut payload) in echo.messages {
            seen.messages.fetch_add(1, Ordering::Relaxed);
            let mut header = [0u8; HEADER_BYTES_MAX];
            let n = core.encode_message_header(kind, false, &mut payload, &mut header);
            echo.out.extend_from_slice(&header[..n]);
            echo.out.extend_from_slice(&payload);
        }
        if !echo.out.is_empty() && tls.write_all(&echo.out).is_err() {
            return;
        }
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) => return note_error(&e, seen),
        }
    }
}

fn note_error(e: &std::io::Error, seen: &Seen) {
    let alert = e.kind() == ErrorKind::InvalidData
        && e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|r| matches!(r, rustls::Error::AlertReceived(_)));
    if alert {
        seen.alerts_received.fetch_add(1, Ordering::Relaxed);
    }
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{name}-{}", std::process::id()))
}

fn write_ca(pki: &Pki, name: &str) -> PathBuf {
    let path = tmp(name).with_extension("pem");
    std::fs::write(&path, &pki.ca_pem).unwrap();
    path
}

/// A number of the report (true and false read as 1 and 0).
fn value(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\": ");
    let start = json.find(&pat).unwrap_or_else(|| panic!("{key} missing")) + pat.len();
    let rest = &json[start..];
    match &rest[..rest.find([',', '\n', '}']).unwrap()] {
        "true" => 1.0,
        "false" => 0.0,
        v => v.parse().unwrap(),
    }
}

/// Runs `ringws-load LINE`; returns whether it passed and its JSON report.
fn load(name: &str, line: &str) -> (bool, String) {
    let out = tmp(name).with_extension("json");
    let status = Command::new(env!("CARGO_BIN_EXE_ringws-load"))
        .args(line.split_whitespace())
        .args([
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--deadline-s",
            "60",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run ringws-load");
    let json = std::fs::read_to_string(&out).expect("report written");
    (status.success(), json)
}

#[test]
fn echo_over_wss_trusting_the_test_ca() {
    let pki = pki();
    let (port, seen) = serve(&pki, false);
    let ca = write_ca(&pki, "ca");
    let (ok, json) = load(
        "echo",
        &format!(
            "echo --url wss://localhost:{port}/ --tls-ca {} --conns 20 --size 100 --duration 1",
            ca.display()
        ),
    );
    assert!(ok, "{json}");
    assert_eq!(value(&json, "tls"), 1.0);
    assert_eq!(value(&json, "connected"), 20.0);
    assert_eq!(value(&json, "errors"), 0.0);
    let echoes = value(&json, "messages");
    assert!(echoes >= 20.0, "every connection got at least one echo");
    let handshakes = value(&json, "tls_handshakes_full") + value(&json, "tls_handshakes_resumed");
    assert_eq!(handshakes, 20.0, "{json}");
    // Every echo the client counted went through the server's TLS and core.
    assert!(seen.messages.load(Ordering::Relaxed) as f64 >= echoes);
    assert_eq!(seen.alerts_received.load(Ordering::Relaxed), 0);
}

#[test]
fn large_messages_span_records_and_receives() {
    // 100 KB messages: seven TLS records each way; the receive buffers are 64 KiB, so records
    // straddle them and are gathered.
    let pki = pki();
    let (port, seen) = serve(&pki, false);
    let (ok, json) = load(
        "large",
        &format!(
            "echo --url wss://127.0.0.1:{port}/ --tls-insecure --conns 4 --size 100000 \
             --duration 1"
        ),
    );
    assert!(ok, "{json}");
    assert_eq!(value(&json, "errors"), 0.0, "{json}");
    assert!(value(&json, "messages") >= 4.0);
    assert!(seen.messages.load(Ordering::Relaxed) >= 4);
}

#[test]
fn tls12_server_works_too() {
    let pki = pki();
    let (port, _seen) = serve(&pki, true);
    let ca = write_ca(&pki, "ca12");
    let (ok, json) = load(
        "tls12",
        &format!(
            "echo --url wss://localhost:{port}/ --tls-ca {} --conns 10 --size 3000 \
             --duration 0.5",
            ca.display()
        ),
    );
    assert!(ok, "{json}");
    assert_eq!(value(&json, "connected"), 10.0);
    assert_eq!(value(&json, "errors"), 0.0);
}

#[test]
fn an_untrusted_certificate_fails_every_connection_with_an_alert() {
    let pki = pki();
    let (port, seen) = serve(&pki, false);
    let other = write_ca(&self::pki(), "other-ca");
    let (ok, json) = load(
        "untrusted",
        &format!(
            "connect --url wss://localhost:{port}/ --tls-ca {} --conns 5 --retries 0",
            other.display()
        ),
    );
    assert!(!ok, "the run must fail: {json}");
    assert_eq!(value(&json, "connected"), 0.0);
    let kinds = &json[json.find("\"error_kinds\"").unwrap()..];
    assert_eq!(value(kinds, "tls"), 5.0, "{json}");
    assert_eq!(value(kinds, "handshake"), 0.0);
    // The client told the server why (an alert), rather than just hanging up.
    for _ in 0..100 {
        if seen.alerts_received.load(Ordering::Relaxed) == 5 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen.alerts_received.load(Ordering::Relaxed), 5);
}

#[test]
fn handshakes_resume_unless_told_not_to() {
    let pki = pki();
    for tls12_only in [false, true] {
        let (port, seen) = serve(&pki, tls12_only);
        let url = format!("wss://127.0.0.1:{port}/");
        let (ok, json) = load(
            "resume",
            &format!("handshakes --url {url} --tls-insecure --conns 4 --duration 0.5"),
        );
        assert!(ok, "{json}");
        let handshakes = value(&json, "messages");
        let resumed = value(&json, "tls_handshakes_resumed");
        assert!(handshakes >= 8.0, "each connection cycled: {json}");
        // The first handshake of each connection is full; later ones resume.
        assert!(resumed >= handshakes - 4.0, "tls12 {tls12_only}: {json}");
        assert!(seen.handshakes_resumed.load(Ordering::Relaxed) as f64 >= handshakes - 4.0);

        let (port, seen) = serve(&pki, tls12_only);
        let url = format!("wss://127.0.0.1:{port}/");
        let (ok, json) = load(
            "full",
            &format!("handshakes --url {url} --tls-insecure --no-resume --conns 4 --duration 0.5"),
        );
        assert!(ok, "{json}");
        assert!(value(&json, "messages") >= 8.0);
        assert_eq!(value(&json, "tls_handshakes_resumed"), 0.0);
        assert_eq!(seen.handshakes_resumed.load(Ordering::Relaxed), 0);
        assert!(seen.handshakes_full.load(Ordering::Relaxed) >= 8);
    }
}

#[test]
fn wss_flags_are_checked() {
    let run = |line: &str| {
        Command::new(env!("CARGO_BIN_EXE_ringws-load"))
            .args(line.split_whitespace())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(run("echo --url wss://127.0.0.1:1/"), Some(2), "no trust");
    assert_eq!(
        run("echo --url wss://127.0.0.1:1/ --tls-insecure --tls-ca x"),
        Some(2)
    );
    assert_eq!(run("echo --url ws://127.0.0.1:1/ --tls-insecure"), Some(2));
    assert_eq!(run("echo --url https://127.0.0.1:1/"), Some(2));
}
