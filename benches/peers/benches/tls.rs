//! The crypto provider for TLS: `ring` against `aws-lc-rs` (issue #12).
//!
//! - `aead/ALG/BYTES`: seal one record's payload in place and open it again (what each side of a
//!   connection pays per record, both directions), for AES-128-GCM, AES-256-GCM and
//!   CHACHA20-POLY1305 at 64 B, 1 KiB and 16 KiB (the largest TLS record).
//! - `handshake/KIND`: one whole TLS 1.3 handshake, client and server together, with rustls's
//!   buffered API in memory (no sockets): `full` (no resumption), `resumed` (a ticket from the
//!   handshake before). `full-x25519` pins the key exchange to X25519 for both: aws-lc-rs offers
//!   the post-quantum hybrid X25519MLKEM768 first by default, ring cannot.
//!
//! The certificate is an rcgen ECDSA P-256 one (what scripts/loadtest.sh makes with openssl).
//! Run: `cargo bench -p ringws-peers --bench tls` (docs/BENCHMARKS.md has the figures).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

const SIZES: [usize; 3] = [64, 1024, 16 * 1024];

/// seal + open of `size` bytes with one provider's AEAD (ring and aws-lc-rs share the API).
macro_rules! aead_bench {
    ($group:expr, $name:literal, $aead:path, $alg:expr, $size:expr) => {{
        use $aead as a;
        let key =
            a::LessSafeKey::new(a::UnboundKey::new($alg, &[7u8; 32][..$alg.key_len()]).unwrap());
        let mut buf = vec![0x5au8; $size + 16];
        $group.bench_with_input(BenchmarkId::new($name, $size), &$size, |b, &size| {
            b.iter(|| {
                let nonce = a::Nonce::assume_unique_for_key([1u8; 12]);
                let tag = key
                    .seal_in_place_separate_tag(nonce, a::Aad::from([23u8; 5]), &mut buf[..size])
                    .unwrap();
                buf[size..].copy_from_slice(tag.as_ref());
                let nonce = a::Nonce::assume_unique_for_key([1u8; 12]);
                let plain = key
                    .open_in_place(nonce, a::Aad::from([23u8; 5]), &mut buf)
                    .unwrap();
                black_box(plain.len());
            })
        });
    }};
}

fn aead(c: &mut Criterion) {
    let algs: [(&str, &ring::aead::Algorithm, &aws_lc_rs::aead::Algorithm); 3] = [
        (
            "AES-128-GCM",
            &ring::aead::AES_128_GCM,
            &aws_lc_rs::aead::AES_128_GCM,
        ),
        (
            "AES-256-GCM",
            &ring::aead::AES_256_GCM,
            &aws_lc_rs::aead::AES_256_GCM,
        ),
        (
            "CHACHA20-POLY1305",
            &ring::aead::CHACHA20_POLY1305,
            &aws_lc_rs::aead::CHACHA20_POLY1305,
        ),
    ];
    for (name, r, l) in algs {
        let mut g = c.benchmark_group(format!("aead/{name}"));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            // Alternating per size, so that drift on a shared machine hits both alike.
            aead_bench!(g, "ring", ring::aead, r, size);
            aead_bench!(g, "aws-lc-rs", aws_lc_rs::aead, l, size);
        }
        g.finish();
    }
}

/// A server and a client configuration on `provider`, the client trusting the server's
/// certificate; `resume` keeps a session cache on both sides.
fn configs(provider: CryptoProvider, resume: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(provider);
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        client.resumption = rustls::client::Resumption::disabled();
        server.send_tls13_tickets = 0;
    }
    (Arc::new(server), Arc::new(client))
}

/// One handshake in memory; returns whether it resumed.
fn handshake(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> bool {
    let name = ServerName::try_from("localhost").unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut wire = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
    }
    c.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

fn x25519_only(mut p: CryptoProvider) -> CryptoProvider {
    p.kx_groups
        .retain(|g| g.name() == rustls::NamedGroup::X25519);
    p
}

fn handshakes(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.sample_size(30);
    type Make = fn() -> CryptoProvider;
    let providers: [(&str, Make); 2] = [
        ("ring", rustls::crypto::ring::default_provider),
        ("aws-lc-rs", rustls::crypto::aws_lc_rs::default_provider),
    ];
    for (kind, resume, pin) in [
        ("full", false, false),
        ("full-x25519", false, true),
        ("resumed", true, false),
    ] {
        for (name, make) in providers {
            let p = if pin { x25519_only(make()) } else { make() };
            let (server, client) = configs(p, resume);
            // Warm the session cache (and check that resumption really happens).
            handshake(&server, &client);
            assert_eq!(handshake(&server, &client), resume, "{name} {kind}");
            g.bench_function(BenchmarkId::new(name, kind), |b| {
                b.iter(|| black_box(handshake(&server, &client)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, aead, handshakes);
criterion_main!(benches);
