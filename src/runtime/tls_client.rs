//! TLS for the load generator's connections (`wss://`): rustls's unbuffered, sans-IO client
//! (`rustls::client::UnbufferedClientConnection`), driven by the io_uring client worker.
//!
//! The worker owns every buffer. Received ciphertext is handed to rustls where the kernel put it
//! (the provided buffer); only a record split across receives is gathered in `spill`, which holds
//! no memory once the record is whole. Outgoing records (handshake messages, encrypted frames) are
//! written into `out`, which the worker sends at the end of the loop turn.
//!
//! What is copied, and why: rustls 0.23 decrypts each application-data record in place in the
//! buffer it is given, but then copies the plaintext into a `Vec` of its own (one allocation per
//! record) and lends it back as `&[u8]`; the public API offers no way to parse the plaintext where
//! it was decrypted. The protocol core parses a `&mut [u8]` (it unmasks in place), so the worker
//! copies each record's plaintext once more into one scratch buffer per worker. Sending, rustls
//! encrypts from the queued plaintext frames straight into `out`.
//!
//! Session resumption is rustls's own client session cache (`Resumption`, shared by every
//! connection of the run through the `ClientConfig`): TLS 1.3 tickets and TLS 1.2 ids.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, UnbufferedClientConnection};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};

/// Bytes a record adds to its plaintext, at most: 5 (header) + 8 (TLS 1.2 explicit nonce) + 16
/// (tag) + 1 (TLS 1.3 inner content type), rounded up.
const RECORD_OVERHEAD_BYTES_MAX: usize = 32;
/// Plaintext bytes per record, at most (RFC 8446 §5.1).
const RECORD_PLAINTEXT_BYTES_MAX: usize = 16 * 1024;
/// First guess at the room a handshake message needs (a ClientHello is ~250 B, a Finished ~60 B).
const ENCODE_GUESS_BYTES: usize = 512;

/// Where and how to speak TLS: the client configuration every connection of the run shares
/// (its session cache included) and the name the certificate must carry.
#[derive(Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// Sessions are cached and resumed.
    pub resume: bool,
}

impl fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTarget")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust<'a> {
    /// Chains to one of the certificates of this PEM file, and names the host.
    Ca(&'a Path),
    /// Anything (a self-signed certificate of a benchmark); handshake signatures are still checked.
    Insecure,
}

/// The crypto provider the load generator uses: `ring` (it builds fast here; see
/// docs/BENCHMARKS.md for the comparison with aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the shared client configuration: TLS 1.3 and 1.2, ALPN `http/1.1`, and a session cache
/// of `sessions` entries (0: no resumption, every handshake is a full one).
pub fn target(host: &str, trust: Trust<'_>, sessions: usize) -> Result<TlsTarget, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let mut config = match trust {
        Trust::Ca(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("--tls-ca {}: no certificate in it", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = if sessions == 0 {
        Resumption::disabled()
    } else {
        Resumption::in_memory_sessions(sessions)
    };
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| format!("TLS server name {name:?}: {e}"))?;
    Ok(TlsTarget {
        config: Arc::new(config),
        server_name,
        resume: sessions > 0,
    })
}

impl TlsTarget {
    /// The shared configuration with a session cache of its own (`handshakes`: rustls keeps at
    /// most 8 TLS 1.3 tickets per server name, and each is used once, so connections that share
    /// one cache run out of tickets and fall back to full handshakes; a client of its own keeps
    /// its tickets, as a real browser would).
    pub fn with_own_cache(&self) -> Arc<ClientConfig> {
        if !self.resume {
            return self.config.clone();
        }
        let mut config = (*self.config).clone();
        config.resumption = Resumption::in_memory_sessions(4);
        Arc::new(config)
    }
}

/// `--tls-insecure`: accepts any certificate, but checks that the server holds its key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Where the TLS session stands after the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The handshake waits for more of the server's bytes.
    Handshaking,
    /// Application data flows both ways.
    Traffic,
    /// The server sent close_notify: it will send nothing more.
    PeerClosed,
}

/// One connection's TLS session.
pub struct TlsSession {
    conn: UnbufferedClientConnection,
    /// The start of a record whose end has not arrived yet (empty, with no capacity, otherwise).
    spill: Vec<u8>,
    /// Records waiting for the next send.
    pub out: Vec<u8>,
    peer_closed: bool,
}

impl TlsSession {
    /// Starts a session: the ClientHello is in `out` when this returns.
    pub fn new(
        config: Arc<ClientConfig>,
        target: &TlsTarget,
    ) -> Result<Box<TlsSession>, rustls::Error> {
        let conn = UnbufferedClientConnection::new(config, target.server_name.clone())?;
        let mut s = Box::new(TlsSession {
            conn,
            spill: Vec::new(),
            out: Vec::new(),
            peer_closed: false,
        });
        s.process(&mut [], &mut |_| true)?;
        Ok(s)
    }

    /// The handshake is not finished yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    /// Heap bytes this session holds in its own buffers (not rustls's internal state).
    pub fn buffer_bytes(&self) -> usize {
        self.spill.capacity() + self.out.capacity()
    }

    /// Feeds received ciphertext. `plain` gets each decrypted record's plaintext, in order, and
    /// returns false to stop delivering (the connection failed). Handshake answers go to `out`.
    pub fn receive(
        &mut self,
        data: &mut [u8],
        plain: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<Progress, rustls::Error> {
        if self.spill.is_empty() {
            let (used, progress) = self.process(data, plain)?;
            if used < data.len() {
                self.spill.extend_from_slice(&data[used..]);
            }
            return Ok(progress);
        }
        let mut spill = std::mem::take(&mut self.spill);
        spill.extend_from_slice(data);
        let (used, progress) = self.process(&mut spill, plain)?;
        spill.drain(..used);
        if !spill.is_empty() {
            self.spill = spill; // else dropped: an idle connection keeps no gather buffer
        }
        Ok(progress)
    }

    /// Runs rustls over `buf` until it needs more bytes; returns the bytes it consumed.
    fn process(
        &mut self,
        buf: &mut [u8],
        plain: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(usize, Progress), rustls::Error> {
        let mut used = 0;
        let mut delivering = true;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut buf[used..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    used += discard;
                    self.queue_alert(&mut buf[used..]);
                    return Err(e);
                }
            };
            let progress = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record?;
                        discard += record.discard;
                        if delivering {
                            delivering = plain(record.payload);
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    encode(&mut e, &mut self.out);
                    None
                }
                // `out` leaves at the end of the loop turn, before anything else is written.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Progress::Handshaking),
                ConnectionState::WriteTraffic(_) => Some(Progress::Traffic),
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.peer_closed = true;
                    Some(Progress::PeerClosed)
                }
                // Early data is a server-side state; nothing else exists in this version.
                _ => Some(Progress::Handshaking),
            };
            used += discard;
            if let Some(p) = progress {
                // After close_notify rustls reports Closed/WriteTraffic again: keep the edge.
                let p = if self.peer_closed {
                    Progress::PeerClosed
                } else {
                    p
                };
                return Ok((used, p));
            }
        }
    }

    /// Encrypts `plaintext` into `out`. Only once the handshake is done (`!is_handshaking()`).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<(), rustls::Error> {
        let records = plaintext.len().div_ceil(RECORD_PLAINTEXT_BYTES_MAX).max(1);
        let room = plaintext.len() + records * RECORD_OVERHEAD_BYTES_MAX;
        self.write_traffic(room, |w, out| w.encrypt(plaintext, out))
    }

    /// Appends a close_notify alert to `out` (when the handshake is done; else nothing).
    pub fn close_notify(&mut self) -> Result<(), rustls::Error> {
        if self.is_handshaking() {
            return Ok(());
        }
        self.write_traffic(RECORD_OVERHEAD_BYTES_MAX, |w, out| {
            w.queue_close_notify(out)
        })
    }

    /// After rustls failed on `buf` (what was left of the bytes it was given: rustls may still
    /// point into them, so no other buffer may be passed): the alert it owes goes to `out`.
    fn queue_alert(&mut self, buf: &mut [u8]) {
        loop {
            let status = self.conn.process_tls_records(buf);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => encode(&mut e, &mut self.out),
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => return,
            }
        }
    }

    /// Gets a `WriteTraffic` state (encoding any pending handshake message first) and writes
    /// into `room` bytes at the end of `out`, growing it if rustls asks.
    fn write_traffic(
        &mut self,
        mut room: usize,
        mut write: impl FnMut(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::client::ClientConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
    ) -> Result<(), rustls::Error> {
        loop {
            // The unconsumed received bytes, as rustls requires (only the start of a record:
            // `receive` consumed everything whole, so nothing is decrypted or discarded here).
            let status = self.conn.process_tls_records(&mut self.spill);
            debug_assert_eq!(status.discard, 0, "receive left only a partial record");
            match status.state? {
                ConnectionState::EncodeTlsData(mut e) => encode(&mut e, &mut self.out),
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::WriteTraffic(mut w) => loop {
                    let start = self.out.len();
                    self.out.resize(start + room, 0);
                    match write(&mut w, &mut self.out[start..]) {
                        Ok(n) => {
                            self.out.truncate(start + n);
                            return Ok(());
                        }
                        Err(EncryptError::InsufficientSize(InsufficientSizeError {
                            required_size,
                        })) => {
                            self.out.truncate(start);
                            room = required_size;
                        }
                        Err(e) => {
                            self.out.truncate(start);
                            return Err(rustls::Error::General(e.to_string()));
                        }
                    }
                },
                other => {
                    return Err(rustls::Error::General(format!(
                        "cannot send application data in state {other:?}"
                    )));
                }
            }
        }
    }
}

/// Appends one handshake (or alert) message to `out`.
fn encode(e: &mut EncodeTlsData<'_, rustls::client::ClientConnectionData>, out: &mut Vec<u8>) {
    let mut room = ENCODE_GUESS_BYTES;
    loop {
        let start = out.len();
        out.resize(start + room, 0);
        match e.encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                out.truncate(start);
                room = required_size;
            }
            Err(EncodeError::AlreadyEncoded) => {
                out.truncate(start);
                return;
            }
        }
    }
}
