//! Helpers for the `wss://` tests: a CA and certificates made with rcgen in a fresh directory,
//! and a blocking WebSocket client over rustls's own (buffered) client.
//!
//! Declared from a test with `#[path = "common/tls.rs"] mod tls;` next to `mod common;`.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use ringws::TlsSettings;
use ringws::proto::connection::{Connection, Limits, MessageKind, Role};
use ringws::proto::frame;
use ringws::proto::handshake::{self, ClientParsed};
use rustls::crypto::cipher::{
    InboundOpaqueMessage, MessageDecrypter, MessageEncrypter, OutboundChunks, OutboundPlainMessage,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, ConnectionTrafficSecrets, ContentType, ProtocolVersion,
    RootCertStore, StreamOwned, SupportedCipherSuite,
};

use crate::common::{Collect, Event, READ_TIMEOUT};

/// A test CA: its certificate (PEM) and what it needs to sign.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses): (chain PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "ringws test");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        roots
    }
}

/// A fresh directory for one test's files.
pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringws-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a certificate chain and key into `dir` as `NAME.crt` / `NAME.key`.
pub fn write_pair(dir: &Path, name: &str, pair: &(String, String)) -> (PathBuf, PathBuf) {
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, &pair.0).unwrap();
    std::fs::write(&k, &pair.1).unwrap();
    (c, k)
}

/// A CA and a `localhost`/`127.0.0.1` certificate on disk, and the settings that serve it.
pub fn setup(tag: &str) -> (Ca, TlsSettings, PathBuf) {
    let dir = temp_dir(tag);
    let ca = Ca::new("ringws test CA");
    let (cert, key) = write_pair(&dir, "server", &ca.issue(&["localhost", "127.0.0.1"]));
    (ca, TlsSettings::new(cert, key), dir)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `ca`, with the given TLS versions and ALPN http/1.1.
pub fn client_config(
    ca: &Ca,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

pub fn tls13(ca: &Ca) -> Arc<ClientConfig> {
    client_config(ca, &[&rustls::version::TLS13])
}

pub fn tls12(ca: &Ca) -> Arc<ClientConfig> {
    client_config(ca, &[&rustls::version::TLS12])
}

/// The ClientHello a rustls client with `config` sends first (one plaintext record).
pub fn client_hello(config: Arc<ClientConfig>) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// The only TLS 1.2 suite [`RawTls12`] seals with: ChaCha20-Poly1305 needs no explicit nonce,
/// and rcgen's default key (ECDSA P-256) serves it.
fn raw_suite() -> SupportedCipherSuite {
    rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
}

/// A TLS 1.2 client configuration for [`WssClient::into_raw_tls12`]: one suite, and the
/// traffic keys may be extracted after the handshake.
pub fn tls12_raw(ca: &Ca) -> Arc<ClientConfig> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites = vec![raw_suite()];
    let mut c = ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c.enable_secret_extraction = true;
    Arc::new(c)
}

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection with its handshake done (nothing sent above TLS yet).
pub fn connect_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> io::Result<TlsStream> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(READ_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(name.to_string()).map_err(io::Error::other)?;
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// One HTTP request over TLS (`GET /metrics` on a `wss://` port): the whole answer.
pub fn https(addr: SocketAddr, config: Arc<ClientConfig>, request: &str) -> io::Result<String> {
    let mut s = connect_tls(addr, config, "localhost")?;
    s.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // TCP ended without close_notify, or by a reset: the answer is what came before.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// A WebSocket client over TLS (the proto core's client role for the frames).
pub struct WssClient {
    pub stream: TlsStream,
    core: Connection,
    sink: Collect,
    buf: Vec<u8>,
}

impl WssClient {
    pub fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<WssClient> {
        WssClient::upgrade(connect_tls(addr, config, "localhost")?)
    }

    /// Sends the upgrade request over an established TLS stream and reads the 101.
    pub fn upgrade(mut stream: TlsStream) -> io::Result<WssClient> {
        let key = handshake::client_key([7u8; 16]);
        let mut req = Vec::new();
        handshake::write_client_request(&mut req, "localhost", "/", &key, None);
        stream.write_all(&req)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let header_len = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            buf.extend_from_slice(&chunk[..n]);
            match handshake::parse_response_offering(&buf, &key, 8192, false) {
                Ok((ClientParsed::Incomplete, _)) => continue,
                Ok((ClientParsed::Accepted { header_len, .. }, _)) => break header_len,
                Err(e) => return Err(io::Error::other(format!("{e:?}"))),
            }
        };
        buf.drain(..header_len);
        let limits = Limits {
            frame_bytes_max: 1 << 30,
            message_bytes_max: 1 << 30,
            message_fragments_max: 1 << 20,
        };
        let mut c = WssClient {
            stream,
            core: Connection::new(Role::Client, limits, 42),
            sink: Collect::default(),
            buf,
        };
        c.feed()?;
        Ok(c)
    }

    fn feed(&mut self) -> io::Result<()> {
        let mut data = std::mem::take(&mut self.buf);
        let _ = self.core.receive(&mut data, &mut self.sink);
        if !self.sink.out.is_empty() {
            let out = std::mem::take(&mut self.sink.out);
            let _ = self.stream.write_all(&out);
        }
        Ok(())
    }

    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) -> io::Result<()> {
        let mut data = payload.to_vec();
        let mut hdr = [0u8; frame::HEADER_BYTES_MAX];
        let n = self.core.encode_data_header(kind, &mut data, &mut hdr);
        let mut f = hdr[..n].to_vec();
        f.extend_from_slice(&data);
        self.stream.write_all(&f)
    }

    pub fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.core.close(code, reason, &mut self.sink);
        let out = std::mem::take(&mut self.sink.out);
        self.stream.write_all(&out)
    }

    /// The next event; `UnexpectedEof` once the server ended TLS (close_notify) or TCP.
    pub fn recv(&mut self) -> io::Result<Event> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(e) = self.sink.events.pop_front() {
                return Ok(e);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            self.feed()?;
        }
    }

    /// Takes the connection over from rustls (made with [`tls12_raw`], nothing unread): its
    /// keys and sequence numbers are extracted, and records are sealed and opened by
    /// [`RawTls12`] from here on.
    pub fn into_raw_tls12(self) -> RawTls12 {
        assert!(self.buf.is_empty() && self.sink.events.is_empty());
        let (conn, sock) = self.stream.into_parts();
        let secrets = conn.dangerous_extract_secrets().unwrap();
        let SupportedCipherSuite::Tls12(suite) = raw_suite() else {
            unreachable!()
        };
        let (tx_seq, ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }) = secrets.tx else {
            panic!("not the ChaCha20-Poly1305 suite of tls12_raw");
        };
        let enc = suite.aead_alg.encrypter(key, iv.as_ref(), &[]);
        let (rx_seq, ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }) = secrets.rx else {
            panic!("not the ChaCha20-Poly1305 suite of tls12_raw");
        };
        let dec = suite.aead_alg.decrypter(key, iv.as_ref());
        RawTls12 {
            sock,
            enc,
            dec,
            tx_seq,
            rx_seq,
            core: self.core,
            sink: self.sink,
        }
    }

    /// Reads until the server ends: `Ok(true)` if it sent close_notify first (a clean TLS
    /// end), `Ok(false)` if TCP ended without one.
    pub fn read_to_end(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}

/// A TLS 1.2 connection whose records the test seals and opens itself (keys taken from rustls
/// after the handshake), so that it can send what rustls's client never would (a renegotiation
/// ClientHello) and see every record the server answers, alerts included.
pub struct RawTls12 {
    pub sock: TcpStream,
    enc: Box<dyn MessageEncrypter>,
    dec: Box<dyn MessageDecrypter>,
    tx_seq: u64,
    rx_seq: u64,
    core: Connection,
    sink: Collect,
}

/// One record the server sent, opened: its content type and plaintext.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub typ: ContentType,
    pub plain: Vec<u8>,
}

impl RawTls12 {
    /// Seals `payload` as one record of type `typ` (the bytes, to send now or batched).
    pub fn seal(&mut self, typ: ContentType, payload: &[u8]) -> Vec<u8> {
        let msg = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(payload),
        };
        let sealed = self.enc.encrypt(msg, self.tx_seq).unwrap();
        self.tx_seq += 1;
        sealed.encode()
    }

    pub fn send_record(&mut self, typ: ContentType, payload: &[u8]) -> io::Result<()> {
        let bytes = self.seal(typ, payload);
        self.sock.write_all(&bytes)
    }

    /// Sends one masked WebSocket message in one application-data record.
    pub fn send_message(&mut self, kind: MessageKind, payload: &[u8]) -> io::Result<()> {
        let mut data = payload.to_vec();
        let mut hdr = [0u8; frame::HEADER_BYTES_MAX];
        let n = self.core.encode_data_header(kind, &mut data, &mut hdr);
        let mut f = hdr[..n].to_vec();
        f.extend_from_slice(&data);
        self.send_record(ContentType::ApplicationData, &f)
    }

    /// The next record from the server, opened; `UnexpectedEof` when TCP ended.
    pub fn read_record(&mut self) -> io::Result<Record> {
        let mut hdr = [0u8; 5];
        self.sock.read_exact(&mut hdr)?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([hdr[3], hdr[4]]))];
        self.sock.read_exact(&mut body)?;
        let typ = ContentType::from(hdr[0]);
        let version = ProtocolVersion::from(u16::from_be_bytes([hdr[1], hdr[2]]));
        let msg = InboundOpaqueMessage::new(typ, version, &mut body);
        let plain = self
            .dec
            .decrypt(msg, self.rx_seq)
            .map_err(io::Error::other)?;
        self.rx_seq += 1;
        Ok(Record {
            typ: plain.typ,
            plain: plain.payload.to_vec(),
        })
    }

    /// Feeds application data to the WebSocket core; returns what it made of it.
    pub fn take_events(&mut self, data: &[u8]) -> Vec<Event> {
        let mut data = data.to_vec();
        let _ = self.core.receive(&mut data, &mut self.sink);
        self.sink.events.drain(..).collect()
    }
}
