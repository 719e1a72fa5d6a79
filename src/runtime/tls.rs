//! Server-side TLS (`wss://`) on rustls's unbuffered, sans-IO API
//! (`rustls::server::UnbufferedServerConnection`). The runtime owns every buffer:
//!
//! - **Receive**: the records in a kernel-filled receive buffer are handed to
//!   `process_tls_records` where they lie, and rustls decrypts them in place there. rustls 0.23
//!   then copies each record's plaintext into a `Vec` of its own (`ReadTraffic::next_record`
//!   gives out a shared slice of it); that plaintext is appended to the worker's scratch buffer,
//!   and the protocol core parses and unmasks it in place there, exactly as it does a plain
//!   receive buffer. A record cut by the end of a receive buffer is gathered in this
//!   connection's `spill` (only the bytes of that record, freed once it is whole).
//! - **Send**: the connection's frames are queued as plaintext (the send queue, as for `ws://`);
//!   when the batch starts, each segment is encrypted by rustls straight into the batch's
//!   registered send chunk (or the queue's heap vector when it does not fit), see
//!   `SendQueue::start_sealed`. Handshake messages and alerts that rustls encodes wait in `out`
//!   and leave first, unencrypted by us (rustls has framed and, where needed, encrypted them).
//!
//! kTLS would plug in at one place: once the handshake is done (`TlsConn::handshake_done`
//! turns true), `UnbufferedServerConnection::dangerous_into_kernel_connection` gives the
//! traffic secrets for `setsockopt(SOL_TLS)`, after which the slot would go back to plain
//! receives and sends. This machine's kernel has no `CONFIG_TLS`, so that path is not written.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, UnbufferedServerConnection};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};

use super::buffers::SealError;
use crate::config::{Config, TlsCertFiles};

/// TLS record header: type, version, length.
const RECORD_HEADER_BYTES: usize = 5;
/// The largest record body TLS allows on the wire (2^14 + 2048); rustls refuses a header that
/// declares more, so the spill never waits for such a record.
const RECORD_BODY_BYTES_MAX: usize = 16_384 + 2048;
/// Most bytes a connection's spill may hold: a few records of a handshake message that rustls
/// joins across records (its handshake messages are at most 64 KiB). Past it: an error.
pub const SPILL_BYTES_MAX: usize = 96 * 1024;
/// The ALPN protocol ringws agrees to (WebSocket is HTTP/1.1 upgrade).
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";
/// The answer to a plaintext HTTP request on the TLS port (then the connection is closed).
const PLAINTEXT_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 35\r\nConnection: close\r\n\r\nthis port speaks TLS: use wss://\r\n";

/// Why the TLS settings could not be loaded (a file, and what is wrong with it).
#[derive(Debug)]
pub struct TlsLoadError(pub String);

impl fmt::Display for TlsLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsLoadError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certified_key(
    files: &TlsCertFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsLoadError> {
    let err = |path: &Path, what: &str| TlsLoadError(format!("{}: {what}", path.display()));
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| err(&files.cert, &e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&files.cert, &e.to_string()))?;
    if certs.is_empty() {
        return Err(err(&files.cert, "no PEM certificate in the file"));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| err(&files.key, &e.to_string()))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| err(&files.key, &e.to_string()))?;
    let ck = CertifiedKey::new(certs, key);
    ck.keys_match().map_err(|e| {
        TlsLoadError(format!(
            "{} and {} do not belong together: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    Ok(ck)
}

/// Picks the certificate by SNI (exact name, ASCII case-insensitive), else the default one.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name();
        let found = name.and_then(|n| {
            self.by_name
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(n))
                .map(|(_, k)| k.clone())
        });
        Some(found.unwrap_or_else(|| self.default.clone()))
    }
}

/// Builds the rustls server configuration from the files named in `cfg`: TLS 1.3 and 1.2,
/// ALPN `http/1.1`, session tickets, a certificate per SNI name plus the default one.
pub fn server_config(cfg: &Config) -> Result<Arc<ServerConfig>, TlsLoadError> {
    let settings = cfg
        .tls
        .as_ref()
        .ok_or_else(|| TlsLoadError("TLS is not configured".into()))?;
    let provider = provider();
    let default = Arc::new(load_certified_key(&settings.default, &provider)?);
    let mut by_name = Vec::new();
    for (name, f) in &settings.sni {
        by_name.push((name.clone(), Arc::new(load_certified_key(f, &provider)?)));
    }
    let mut sc = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsLoadError(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    sc.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    sc.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| TlsLoadError(format!("session tickets: {e}")))?;
    // No 0-RTT: early data could be replayed, and a WebSocket upgrade gains nothing from it.
    sc.max_early_data_size = 0;
    Ok(Arc::new(sc))
}

/// The server's TLS configuration, shared by every worker and replaced whole on reload
/// (SIGHUP): a handshake that has started keeps the configuration it started with.
pub struct TlsShared {
    current: Mutex<Arc<ServerConfig>>,
    generation: AtomicU64,
    cfg: Arc<Config>,
}

impl TlsShared {
    /// Loads the certificates named in `cfg` (an error names the file and the reason).
    pub fn new(cfg: Arc<Config>) -> Result<TlsShared, TlsLoadError> {
        Ok(TlsShared {
            current: Mutex::new(server_config(&cfg)?),
            generation: AtomicU64::new(0),
            cfg,
        })
    }

    /// Reads the certificate and key files again. On error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsLoadError> {
        let fresh = server_config(&self.cfg)?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// How many reloads succeeded.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A worker's view of [`TlsShared`]: the configuration, refreshed only when a reload happened
/// (one relaxed-cost atomic load per accepted connection, no lock).
pub struct WorkerTls {
    shared: Arc<TlsShared>,
    generation: u64,
    config: Arc<ServerConfig>,
}

impl WorkerTls {
    pub fn new(shared: Arc<TlsShared>) -> WorkerTls {
        let generation = shared.generation();
        let config = shared.current();
        WorkerTls {
            shared,
            generation,
            config,
        }
    }

    /// A new connection's TLS state, with the configuration in force now.
    pub fn accept(&mut self) -> Result<Box<TlsConn>, rustls::Error> {
        let g = self.shared.generation();
        if g != self.generation {
            self.generation = g;
            self.config = self.shared.current();
        }
        Ok(Box::new(TlsConn {
            conn: UnbufferedServerConnection::new(self.config.clone())?,
            spill: Vec::new(),
            out: Vec::new(),
            flags: 0,
        }))
    }
}

mod tf {
    pub const PEER_CLOSED: u8 = 1 << 0;
    pub const CLOSE_NOTIFY_QUEUED: u8 = 1 << 1;
    pub const FAILED: u8 = 1 << 2;
    pub const HANDSHAKE_COUNTED: u8 = 1 << 3;
    pub const SAW_BYTES: u8 = 1 << 4;
}

/// Why TLS input ended the connection.
#[derive(Debug)]
pub enum TlsFailure {
    /// A plaintext HTTP request on the TLS port: an HTTP 400 is queued.
    PlaintextHttp,
    /// rustls refused the input (an alert is queued when rustls has one for it).
    Protocol(rustls::Error),
    /// A record or handshake message gathered past [`SPILL_BYTES_MAX`].
    SpillFull,
}

/// One connection's TLS state: rustls's connection, a spill for a record cut by the end of a
/// receive buffer, and the TLS bytes rustls encoded that wait to be sent. Both vectors are
/// empty (no heap) while the connection is idle.
pub struct TlsConn {
    conn: UnbufferedServerConnection,
    spill: Vec<u8>,
    out: Vec<u8>,
    flags: u8,
}

/// Bytes still missing to complete the last record in `data` (0 if `data` ends at a record
/// boundary, or with a header that rustls will refuse at once).
fn missing(data: &[u8]) -> usize {
    let mut at = 0;
    loop {
        if at == data.len() {
            return 0;
        }
        if at + RECORD_HEADER_BYTES > data.len() {
            return at + RECORD_HEADER_BYTES - data.len();
        }
        let len = usize::from(u16::from_be_bytes([data[at + 3], data[at + 4]]));
        if len > RECORD_BODY_BYTES_MAX {
            return 0;
        }
        at += RECORD_HEADER_BYTES + len;
        if at > data.len() {
            return at - data.len();
        }
    }
}

/// Whether `data` starts like an HTTP request (an upper-case method and a space): no TLS
/// record starts with an ASCII letter.
fn looks_like_http(data: &[u8]) -> bool {
    let method = data.iter().take_while(|b| b.is_ascii_uppercase()).count();
    method >= 3 && data.get(method) == Some(&b' ')
}

/// Appends what `encode` writes to `out`, growing it to the size rustls asks for.
fn encode_into(out: &mut Vec<u8>, mut encode: impl FnMut(&mut [u8]) -> Result<usize, usize>) {
    let start = out.len();
    let mut room = 1024;
    loop {
        out.resize(start + room, 0);
        match encode(&mut out[start..]) {
            Ok(n) => return out.truncate(start + n),
            Err(need) if need > room => room = need,
            Err(_) => return out.truncate(start),
        }
    }
}

/// Moves what rustls has queued to send (handshake, alerts, key updates) into `out`, handing it
/// `buf`: the bytes it has seen and not consumed. Returns whether application data may be
/// encrypted now, and how many bytes of `buf` rustls consumed.
fn drain_encoded(
    conn: &mut UnbufferedServerConnection,
    out: &mut Vec<u8>,
    flags: &mut u8,
    buf: &mut [u8],
) -> (bool, usize) {
    let mut pos = 0;
    loop {
        let st = conn.process_tls_records(&mut buf[pos..]);
        let discard = st.discard;
        let done = match st.state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                encode_into(out, |b| e.encode(b).map_err(encode_error));
                None
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                t.done();
                None
            }
            Ok(ConnectionState::PeerClosed) => {
                *flags |= tf::PEER_CLOSED;
                None
            }
            Ok(ConnectionState::WriteTraffic(_)) => Some(true),
            _ => Some(false),
        };
        pos += discard;
        if let Some(ready) = done {
            return (ready, pos);
        }
    }
}

fn encode_error(e: EncodeError) -> usize {
    match e {
        EncodeError::InsufficientSize(s) => s.required_size,
        EncodeError::AlreadyEncoded => 0,
    }
}

impl TlsConn {
    /// Feeds bytes read from the socket. The plaintext they carry is appended to `plain`, in
    /// order. An error means the connection must end (after sending [`TlsConn::take_pending`]).
    pub fn receive(&mut self, mut buf: &mut [u8], plain: &mut Vec<u8>) -> Result<(), TlsFailure> {
        if self.has(tf::FAILED | tf::PEER_CLOSED) {
            return Ok(());
        }
        if !self.has(tf::SAW_BYTES) && !buf.is_empty() {
            self.flags |= tf::SAW_BYTES;
            if looks_like_http(buf) {
                self.flags |= tf::FAILED | tf::CLOSE_NOTIFY_QUEUED;
                self.out.extend_from_slice(PLAINTEXT_ANSWER);
                return Err(TlsFailure::PlaintextHttp);
            }
        }
        if !self.spill.is_empty() {
            let mut spill = std::mem::take(&mut self.spill);
            let need = missing(&spill);
            let take = need.min(buf.len());
            spill.extend_from_slice(&buf[..take]);
            buf = &mut buf[take..];
            let need = missing(&spill);
            if need > 0 && !buf.is_empty() {
                // The header of the record just became whole: take its body too.
                let take = need.min(buf.len());
                spill.extend_from_slice(&buf[..take]);
                buf = &mut buf[take..];
            }
            if missing(&spill) > 0 {
                return self.keep_spill(spill);
            }
            let used = self.process(&mut spill, plain)?;
            spill.drain(..used);
            if !spill.is_empty() {
                // rustls holds a handshake message that spans records: what follows must stay
                // contiguous with it, so it joins the spill.
                spill.extend_from_slice(buf);
                let used = self.process(&mut spill, plain)?;
                spill.drain(..used);
                return self.keep_spill(spill);
            }
        }
        let used = self.process(buf, plain)?;
        let rest = &buf[used..];
        if !rest.is_empty() && !self.has(tf::PEER_CLOSED) {
            return self.keep_spill(rest.to_vec());
        }
        Ok(())
    }

    fn keep_spill(&mut self, spill: Vec<u8>) -> Result<(), TlsFailure> {
        if spill.len() > SPILL_BYTES_MAX {
            self.flags |= tf::FAILED;
            return Err(TlsFailure::SpillFull);
        }
        // Freed while empty: an idle connection holds no spill.
        self.spill = if spill.is_empty() { Vec::new() } else { spill };
        Ok(())
    }

    /// Runs rustls over `data` until it needs more; returns how many bytes it consumed.
    fn process(&mut self, data: &mut [u8], plain: &mut Vec<u8>) -> Result<usize, TlsFailure> {
        let mut pos = 0;
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut data[pos..]);
            let step = match state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut r)) => loop {
                    match r.next_record() {
                        Some(Ok(rec)) => plain.extend_from_slice(rec.payload),
                        Some(Err(e)) => break Err(e),
                        None => break Ok(true),
                    }
                },
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode_into(&mut self.out, |b| e.encode(b).map_err(encode_error));
                    Ok(true)
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    // `out` is sent at the end of the turn, before any data sealed after it.
                    t.done();
                    Ok(true)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.flags |= tf::PEER_CLOSED;
                    Ok(true)
                }
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                    Ok(false)
                }
                Ok(ConnectionState::Closed) => Ok(false),
                // No early data is accepted (max_early_data_size = 0); any other state is one
                // this code does not know.
                Ok(_) => Err(rustls::Error::General("unexpected TLS state".into())),
            };
            pos += discard;
            match step {
                Ok(true) => {}
                Ok(false) => return Ok(pos),
                Err(e) => {
                    self.fail(&mut data[pos..]);
                    return Err(TlsFailure::Protocol(e));
                }
            }
        }
    }

    /// After rustls refused input: collect the alert it queued, and send nothing more. `rest`
    /// is what rustls has not consumed of the buffer it refused (it must see the same bytes).
    /// Only what rustls already queued is taken (`wants_write`): while its queue is not empty
    /// it returns it before reading input, so the refused bytes are not parsed again (which
    /// would make it raise a second fatal alert).
    fn fail(&mut self, rest: &mut [u8]) {
        self.flags |= tf::FAILED | tf::CLOSE_NOTIFY_QUEUED;
        while self.conn.wants_write() {
            let st = self.conn.process_tls_records(rest);
            let Ok(ConnectionState::EncodeTlsData(mut e)) = st.state else {
                break;
            };
            encode_into(&mut self.out, |b| e.encode(b).map_err(encode_error));
        }
    }

    /// [`drain_encoded`] outside `receive`: rustls is handed the bytes it has seen and not
    /// consumed (they wait in the spill; rustls keeps offsets into them and must be given the
    /// same bytes again, never an empty buffer in their place).
    fn drain_encoded(&mut self) -> bool {
        let mut spill = std::mem::take(&mut self.spill);
        let (ready, used) =
            drain_encoded(&mut self.conn, &mut self.out, &mut self.flags, &mut spill);
        spill.drain(..used);
        self.spill = if spill.is_empty() { Vec::new() } else { spill };
        ready
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Whether the TLS handshake is done (the first time it is, also marks it counted: the
    /// caller counts a handshake once).
    pub fn take_handshake_done(&mut self) -> Option<bool> {
        if self.has(tf::HANDSHAKE_COUNTED) || self.conn.is_handshaking() {
            return None;
        }
        self.flags |= tf::HANDSHAKE_COUNTED;
        Some(self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
    }

    /// Whether the handshake is over (kTLS would take the secrets from here).
    pub fn handshake_done(&self) -> bool {
        !self.conn.is_handshaking()
    }

    /// Whether the peer sent close_notify (no more input will be read).
    pub fn peer_closed(&self) -> bool {
        self.has(tf::PEER_CLOSED)
    }

    /// Whether rustls encoded TLS bytes that wait to be sent.
    pub fn has_pending(&self) -> bool {
        !self.out.is_empty()
    }

    /// The TLS bytes encoded by rustls, to go out before anything sealed now (the connection
    /// keeps no buffer for them after).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Makes ready to encrypt: moves whatever rustls wants to send into `pending`. False if no
    /// application data may be sent (handshake unfinished, or the connection failed).
    pub fn prepare_seal(&mut self) -> bool {
        !self.has(tf::FAILED) && self.drain_encoded()
    }

    /// Encrypts `plain` into `out` as TLS records; the bytes written.
    pub fn seal(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, SealError> {
        let st = self.conn.process_tls_records(&mut self.spill);
        let used = st.discard;
        let res = match st.state {
            Ok(ConnectionState::WriteTraffic(mut w)) => {
                w.encrypt(plain, out).map_err(|e| match e {
                    EncryptError::InsufficientSize(s) => SealError::TooSmall(s.required_size),
                    _ => SealError::Failed,
                })
            }
            _ => Err(SealError::Failed),
        };
        self.spill.drain(..used);
        res
    }

    /// Queues our close_notify once (before the TCP write side is shut). False if there is
    /// nothing to send (already done, failed, or the handshake never finished).
    pub fn queue_close_notify(&mut self) -> bool {
        if self.has(tf::CLOSE_NOTIFY_QUEUED) {
            return false;
        }
        self.flags |= tf::CLOSE_NOTIFY_QUEUED;
        if !self.drain_encoded() {
            return false;
        }
        let st = self.conn.process_tls_records(&mut self.spill);
        let used = st.discard;
        if let Ok(ConnectionState::WriteTraffic(mut w)) = st.state {
            encode_into(&mut self.out, |b| {
                w.queue_close_notify(b).map_err(|e| match e {
                    EncryptError::InsufficientSize(s) => s.required_size,
                    _ => 0,
                })
            });
        }
        self.spill.drain(..used);
        !self.out.is_empty()
    }

    /// Heap bytes this connection holds in its own buffers (not rustls's internals).
    pub fn buffer_bytes(&self) -> usize {
        self.spill.capacity() + self.out.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_walks_records() {
        assert_eq!(missing(&[]), 0);
        assert_eq!(missing(&[22, 3, 1]), 2);
        assert_eq!(missing(&[22, 3, 1, 0, 4]), 4);
        assert_eq!(missing(&[22, 3, 1, 0, 2, 9, 9]), 0);
        assert_eq!(missing(&[22, 3, 1, 0, 2, 9, 9, 23]), 4);
        assert_eq!(missing(&[22, 3, 1, 0, 2, 9, 9, 23, 3, 3, 0, 3, 1]), 2);
        // A header that declares an impossible length: rustls must see it at once.
        assert_eq!(missing(&[22, 3, 1, 0xff, 0xff]), 0);
    }

    #[test]
    fn http_is_told_from_tls() {
        assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_http(b"POST /x HTTP/1.1\r\n"));
        assert!(!looks_like_http(&[22, 3, 1, 0, 200]));
        assert!(!looks_like_http(b"GE"));
    }

    /// A TLS state on a certificate made here (rcgen), as a worker would make it.
    fn conn() -> Box<TlsConn> {
        let dir = std::env::temp_dir().join(format!("ringws-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let cfg = Config {
            tls: Some(crate::config::TlsSettings::new(c, k)),
            ..Config::default()
        };
        let shared = Arc::new(TlsShared::new(Arc::new(cfg)).unwrap());
        WorkerTls::new(shared).accept().unwrap()
    }

    /// Found by the fuzz target: a ClientHello that rustls joins across records and then
    /// refuses. Collecting its alert with an empty buffer (instead of the bytes rustls had not
    /// consumed) made rustls index past it and panic.
    #[test]
    fn an_error_after_a_joined_handshake_message_is_an_alert_not_a_panic() {
        let mut input = vec![
            22, 3, 1, 0, 47, 1, 0, 0, 249, 3, 3, 112, 157, 179, 97, 151, 225, 28, 250, 55, 75, 139,
            46, 208, 186, 130, 51, 54, 230, 27, 67, 52, 87, 51, 204, 40, 53, 237, 187, 115, 116,
            154, 132, 32, 128, 26, 92, 143, 210, 98, 33, 3, 5, 3, 6, 3, 8, 7, 8, 8, 8, 9, 8, 10, 8,
            11, 8, 4, 8, 5, 8, 6, 4, 1, 5, 1, 6, 1, 0, 43, 0, 251, 1, 3, 4, 0, 45, 0, 2, 1, 1, 0,
            51, 0, 38, 0, 36, 0, 29, 0, 32, 128, 69, 174, 236, 76, 121, 12, 239, 106, 255, 34, 6,
            177, 239, 255, 83, 32, 241, 155, 104, 245, 209, 191, 34, 136, 211, 2, 61, 90, 252, 57,
            31,
        ];
        let mut c = conn();
        let mut plain = Vec::new();
        assert!(c.receive(&mut input, &mut plain).is_err());
        assert!(c.has_pending(), "an alert is queued");
        assert!(c.take_pending().starts_with(&[21]));
        assert!(plain.is_empty());
    }
}
