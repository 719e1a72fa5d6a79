//! Shared parts of the peer servers: the command line, a one-thread runtime, the listener and
//! the broadcast hub.
//!
//! With `--tls-cert FILE --tls-key FILE` a peer serves `wss://` only, through tokio-rustls on
//! rustls's `ring` provider (the one `ringws` uses): TLS 1.3 and 1.2, ALPN `http/1.1`, session
//! resumption by stateless tickets (TLS 1.3) and rustls's session cache (TLS 1.2 ids).
//!
//! Every peer is single-threaded (one tokio `current_thread` runtime and a `LocalSet`), so one
//! server uses one core, like `ringws serve --workers 1`.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use slab::Slab;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// What the server does with a text or binary message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Send it back unchanged to its sender.
    Echo,
    /// Send it to every connected client, the sender included (like `ringws --mode broadcast`).
    Broadcast,
}

/// `peer-NAME --port P [--mode echo|broadcast] [--tls-cert FILE --tls-key FILE]`.
#[derive(Debug)]
pub struct Args {
    pub port: u16,
    pub mode: Mode,
    /// PEM certificate chain and PEM private key: serve `wss://`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

pub const USAGE: &str =
    "usage: peer-NAME --port P [--mode echo|broadcast] [--tls-cert FILE --tls-key FILE]";

/// Parses the arguments after the program name.
pub fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        port: 9001,
        mode: Mode::Echo,
        tls: None,
    };
    let (mut cert, mut key) = (None, None);
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => {
                a.port = v
                    .parse()
                    .map_err(|_| format!("--port: not a number: {v}"))?
            }
            "--mode" => {
                a.mode = match v.as_str() {
                    "echo" => Mode::Echo,
                    "broadcast" => Mode::Broadcast,
                    _ => return Err(format!("--mode: echo|broadcast, not {v}")),
                }
            }
            "--tls-cert" => cert = Some(PathBuf::from(v)),
            "--tls-key" => key = Some(PathBuf::from(v)),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    a.tls = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok(a)
}

/// Parses `std::env::args`, or prints the usage and exits with status 2.
pub fn args_or_exit() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    parse_args(&argv).unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2)
    })
}

/// Runs `main` on one `current_thread` runtime inside a `LocalSet` (so tasks may hold `Rc`).
pub fn run_local<F: Future<Output = ()>>(main: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio::task::LocalSet::new().block_on(&rt, main);
}

/// The TLS server configuration from `--tls-cert` / `--tls-key`, on the `ring` provider.
pub fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Binds 127.0.0.1:port and prints `listening on ws://127.0.0.1:PORT` (`wss://` with TLS; the
/// real port if 0).
pub async fn listen(port: u16, tls: bool) -> TcpListener {
    let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
    let scheme = if tls { "wss" } else { "ws" };
    println!(
        "listening on {scheme}://{}",
        l.local_addr().expect("local_addr")
    );
    let _ = std::io::stdout().flush();
    l
}

/// Accepts connections forever and runs `serve` on each as a local task (TCP_NODELAY set, as
/// ringws does).
pub async fn accept_loop<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::task::spawn_local(tokio::task::unconstrained(serve(stream)));
    }
}

/// `accept_loop` for `wss://`: each connection's TLS handshake runs in its own task, then `serve`.
pub async fn accept_loop_tls<F, Fut>(listener: TcpListener, acceptor: TlsAcceptor, serve: F)
where
    F: Fn(TlsStream<TcpStream>) -> Fut + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, serve) = (acceptor.clone(), serve.clone());
        tokio::task::spawn_local(tokio::task::unconstrained(async move {
            if let Ok(tls) = acceptor.accept(stream).await {
                serve(tls).await;
            }
        }));
    }
}

/// Runs the peer's `serve` for every connection, over TLS when `--tls-cert` was given.
#[macro_export]
macro_rules! serve_all {
    ($args:expr, $listener:expr, |$s:ident| $body:expr) => {
        match &$args.tls {
            None => $crate::accept_loop($listener, move |$s| $body).await,
            Some((cert, key)) => {
                let acceptor = $crate::tls_acceptor(cert, key).unwrap_or_else(|e| {
                    eprintln!("{e}");
                    std::process::exit(2)
                });
                $crate::accept_loop_tls($listener, acceptor, move |$s| $body).await
            }
        }
    };
}

/// The connected clients of a broadcast server: one unbounded queue per client, drained by that
/// client's writer task. `T` is the crate's cheap-to-clone message (payload in `Bytes`).
pub struct Hub<T> {
    clients: RefCell<Slab<UnboundedSender<T>>>,
}

impl<T: Clone> Hub<T> {
    pub fn new() -> Rc<Hub<T>> {
        Rc::new(Hub {
            clients: RefCell::new(Slab::with_capacity(1024)),
        })
    }

    /// Adds a client; returns its key for `leave`.
    pub fn join(&self, tx: UnboundedSender<T>) -> usize {
        self.clients.borrow_mut().insert(tx)
    }

    pub fn leave(&self, key: usize) {
        self.clients.borrow_mut().try_remove(key);
    }

    /// Queues `msg` for every client (one clone of the shared message each, no payload copy).
    pub fn broadcast(&self, msg: &T) {
        for (_, tx) in self.clients.borrow().iter() {
            let _ = tx.send(msg.clone());
        }
    }
}

/// utime + stime of this process, in clock ticks (from /proc/self/stat).
pub fn cpu_ticks_self() -> u64 {
    cpu_ticks("self")
}

/// utime + stime of process `pid` ("self" for this one), in clock ticks; 0 if unreadable.
pub fn cpu_ticks(pid: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    num(11) + num(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn args_parse() {
        let a = parse_args(&argv("--port 1234 --mode broadcast")).unwrap();
        assert_eq!((a.port, a.mode), (1234, Mode::Broadcast));
        let a = parse_args(&argv("--port 7")).unwrap();
        assert_eq!((a.port, a.mode), (7, Mode::Echo));
        assert!(a.tls.is_none());
        let a = parse_args(&argv("--tls-cert c.pem --tls-key k.pem")).unwrap();
        assert_eq!(a.tls, Some(("c.pem".into(), "k.pem".into())));
        assert!(parse_args(&argv("--tls-cert c.pem")).is_err());
        assert!(parse_args(&argv("--mode pubsub")).is_err());
        assert!(parse_args(&argv("--port")).is_err());
        assert!(parse_args(&argv("--bogus 1")).is_err());
    }

    #[test]
    fn hub_reaches_every_client_once() {
        let hub = Hub::new();
        let (a, mut ra) = tokio::sync::mpsc::unbounded_channel();
        let (b, mut rb) = tokio::sync::mpsc::unbounded_channel();
        let ka = hub.join(a);
        hub.join(b);
        hub.broadcast(&7u32);
        hub.leave(ka);
        hub.broadcast(&8u32);
        assert_eq!(ra.try_recv().ok(), Some(7));
        assert!(ra.try_recv().is_err());
        assert_eq!((rb.try_recv().ok(), rb.try_recv().ok()), (Some(7), Some(8)));
    }

    #[test]
    fn cpu_ticks_grow_with_work() {
        let t0 = cpu_ticks_self();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_ticks_self() >= t0);
    }
}
