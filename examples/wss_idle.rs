//! Holds N idle `wss://` connections open (for measuring the server's memory per idle TLS
//! connection, `scripts/tls_measure.sh`): each does a full TLS handshake (rustls client, trusting
//! the CA file given), the WebSocket upgrade, one 64-byte echo, and then nothing until stdin
//! closes. Prints `ready N` once all are open.
//!
//! ```text
//! cargo run --release --example wss_idle -- 127.0.0.1:9001 10000 ca.crt [tls12]
//! ```
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

#[path = "common/upgrade.rs"]
mod upgrade;

use ringws::proto::frame::{self, OpCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut s = StreamOwned::new(ClientConnection::new(config.clone(), name).unwrap(), tcp);
    upgrade::upgrade(&mut s, "localhost");
    let mut f = Vec::new();
    frame::encode_frame(&mut f, true, OpCode::Binary, &[5u8; 64], Some([1, 2, 3, 4]));
    s.write_all(&f).unwrap();
    let mut echo = [0u8; 66];
    s.read_exact(&mut echo).unwrap();
    s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, n, ca, rest @ ..] = &args[..] else {
        eprintln!("usage: wss_idle ADDR N CA_FILE [tls12]");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR");
    let n: usize = n.parse().expect("N");
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(c.expect("CA PEM")).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        if rest.first().map(String::as_str) == Some("tls12") {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
    let config = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let conns: Vec<Tls> = (0..n).map(|_| connect(addr, &config)).collect();
    println!("ready {}", conns.len());
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(conns);
}
