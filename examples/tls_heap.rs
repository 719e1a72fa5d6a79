//! What one idle wss connection's TLS state holds on the heap (a measurement, not a test):
//! a server-side `TlsConn`, as a worker makes it, does a handshake with rustls's client in
//! process and echoes one message; every allocation made while the server side ran and still
//! live afterwards is listed with its size (malloc's usable size, which is what RSS pays).
//!
//! Seen 2026-12-02 (rustls 0.23.46, ring 0.17.14), TLS 1.3: 9 chunks, 3,488 B: the boxed
//! `TlsConn` 1,152; rustls's handshake deframer spans 656 (allocated with the connection, kept
//! for its life); two AES-128-GCM keys 576 each; a transcript-hash fork 240; two empty
//! `ChunkVecBuffer` queues 112 each; SNI and ALPN 32 each. TLS 1.2: 12 chunks, 3,616 B.
//! `TLS_HEAP_WHERE=1` prints each tracked allocation's backtrace to stderr.
//!
//! usage: cargo run --release --example tls_heap [tls12]
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use ringws::config::{Config, TlsSettings};
use ringws::runtime::tls::{TlsShared, WorkerTls};

/// Live allocations made while tracking: (address, requested bytes); 0 is a free entry.
static LIVE: [(AtomicUsize, AtomicUsize); 4096] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 4096];

/// TLS_HEAP_WHERE set: each tracked allocation is printed with its backtrace.
static WHERE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
}

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; the table only records
// addresses, without allocating.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if TRACK.with(Cell::get) && !p.is_null() {
            if let Some((a, s)) = LIVE.iter().find(|(a, _)| a.load(Relaxed) == 0) {
                a.store(p as usize, Relaxed);
                s.store(layout.size(), Relaxed);
            }
            if WHERE.load(Relaxed) {
                TRACK.with(|t| t.set(false));
                let bt = std::backtrace::Backtrace::force_capture().to_string();
                eprintln!("ALLOC {} at {:#x}\n{bt}", layout.size(), p as usize);
                TRACK.with(|t| t.set(true));
            }
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if let Some((a, _)) = LIVE.iter().find(|(a, _)| a.load(Relaxed) == p as usize) {
            a.store(0, Relaxed);
        }
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(p, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn tracked<T>(f: impl FnOnce() -> T) -> T {
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    out
}

fn main() {
    let tls12 = std::env::args().nth(1).as_deref() == Some("tls12");
    WHERE.store(std::env::var_os("TLS_HEAP_WHERE").is_some(), Relaxed);
    let dir = std::env::temp_dir().join(format!("ringws-tls-heap-{}", std::process::id()));
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
        tls: Some(TlsSettings::new(c, k)),
        ..Config::default()
    };
    let mut worker = WorkerTls::new(Arc::new(TlsShared::new(Arc::new(cfg)).unwrap()));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = "localhost".try_into().unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name).unwrap();

    let mut server = tracked(|| worker.accept().unwrap());
    // The worker's plaintext buffer is its own, not the connection's: made before tracking.
    let mut plain = Vec::with_capacity(1 << 16);
    let mut echoed = false;
    for _ in 0..20 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        tracked(|| server.receive(&mut wire, &mut plain).unwrap());
        let out = tracked(|| {
            let mut out = server.take_pending();
            if !plain.is_empty() && server.prepare_seal() {
                out.extend(server.take_pending());
                let mut sealed = vec![0; plain.len() + 256];
                let n = server.seal(&plain, &mut sealed).unwrap();
                out.extend_from_slice(&sealed[..n]);
                plain.clear();
                echoed = true;
            }
            out
        });
        let mut rd = &out[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
        }
        client.process_new_packets().unwrap();
        if !client.is_handshaking() && !echoed {
            client.writer().write_all(&[7u8; 64]).unwrap();
        }
        let mut got = [0u8; 64];
        if echoed && client.reader().read(&mut got).is_ok() {
            break;
        }
    }
    assert!(echoed, "the handshake and the echo completed");

    let box_bytes = size_of_val(&*server);
    let mut sizes: Vec<usize> = LIVE
        .iter()
        .map(|(_, s)| s.load(Relaxed))
        .zip(LIVE.iter().map(|(a, _)| a.load(Relaxed)))
        .filter(|&(_, a)| a != 0)
        // SAFETY: the address is a live allocation of the system allocator (malloc).
        .map(|(_, a)| unsafe { libc::malloc_usable_size(a as *mut libc::c_void) } + 8)
        .collect();
    if std::env::var_os("TLS_HEAP_WHERE").is_some() {
        for (a, s) in LIVE.iter().filter(|(a, _)| a.load(Relaxed) != 0) {
            eprintln!("LIVE {:#x} {}", a.load(Relaxed), s.load(Relaxed));
        }
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let total: usize = sizes.iter().sum();
    println!(
        "{}: {} live allocations, {total} B with malloc's headers (TlsConn itself {box_bytes} B)",
        if tls12 { "TLS 1.2" } else { "TLS 1.3" },
        sizes.len()
    );
    println!("chunk sizes, largest first: {sizes:?}");
    drop(server);
}
