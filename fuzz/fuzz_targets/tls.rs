//! The TLS receive path (`runtime::tls::TlsConn::receive`, rustls's unbuffered server and the
//! spill that gathers records cut across receive buffers) on arbitrary bytes, cut into receive
//! buffers at points the input chooses: never panics, keeps its spill within its limit, and once
//! it refuses the input it stays refused.
//!
//! The certificate and key in fuzz/tls/ are a throw-away self-signed pair made for this target.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use ringws::runtime::tls::{SPILL_BYTES_MAX, TlsShared, WorkerTls};
use ringws::{Config, TlsSettings};

fn worker() -> &'static Mutex<WorkerTls> {
    static W: OnceLock<Mutex<WorkerTls>> = OnceLock::new();
    W.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ringws-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, include_str!("../tls/cert.pem")).unwrap();
        std::fs::write(&key, include_str!("../tls/key.pem")).unwrap();
        let cfg = Config {
            tls: Some(TlsSettings::new(cert, key)),
            ..Config::default()
        };
        Mutex::new(WorkerTls::new(Arc::new(TlsShared::new(Arc::new(cfg)).unwrap())))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, data)) = data.split_first() else {
        return;
    };
    let mut conn = worker().lock().unwrap().accept().unwrap();
    let mut buf = data.to_vec();
    let mut plain = Vec::new();
    let step = usize::from(cuts) + 1;
    let mut failed = false;
    for chunk in buf.chunks_mut(step) {
        let res = conn.receive(chunk, &mut plain);
        assert!(conn.buffer_bytes() <= 2 * SPILL_BYTES_MAX, "spill past its limit");
        if failed {
            assert!(res.is_ok(), "after a failure input is ignored");
            assert!(plain.is_empty(), "no plaintext after a failure");
        }
        failed |= res.is_err();
    }
    // Nothing but records from a real peer can decrypt: no plaintext comes out of bytes that
    // never finished a handshake.
    assert!(plain.is_empty());
});
