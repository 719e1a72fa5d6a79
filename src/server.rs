//! Starting and stopping a server: one worker thread per core (or `Config::workers`), each with
//! its own SO_REUSEPORT listener and ring, pinned to a core.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use crate::config::Config;
use crate::handler::{Handler, Mailbox, Publisher, WorkerId};
use crate::metrics::{Metrics, WorkerMetrics};
use crate::runtime::sys;
use crate::runtime::tls::{TlsLoadError, TlsShared};
use crate::runtime::worker::{self, SPARE_FIXED_FILES, WorkerSetup};
use crate::topics::HistoryStore;

/// A running server.
pub struct ServerHandle {
    addr: SocketAddr,
    publisher: Publisher,
    metrics: Arc<Metrics>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    tls: Option<Arc<TlsShared>>,
}

impl ServerHandle {
    /// The address it listens on (with the real port when port 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to send, publish and broadcast from any thread.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// The counters of every worker.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `wss://`: reads the certificate and key files again. New handshakes use them; live
    /// connections keep theirs. On error (a file missing, unparsable, or a key that does not
    /// match its certificate) the certificates in use stay, and the error says which file.
    pub fn reload_tls(&self) -> Result<(), TlsLoadError> {
        match &self.tls {
            Some(t) => t.reload(),
            None => Err(TlsLoadError("this server does not speak TLS".into())),
        }
    }

    /// Starts the graceful shutdown (Close 1001 to everyone, at most the close timeout).
    pub fn shutdown(&self) {
        self.publisher.shutdown();
    }

    /// Waits for every worker (and broker thread) to leave; the first worker error, if any.
    pub fn join(self) -> io::Result<()> {
        self.publisher.join_broker();
        let mut first = Ok(());
        for t in self.threads {
            let res = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("worker panicked")));
            if first.is_ok() {
                first = res;
            }
        }
        first
    }
}

/// Starts a server on `addr` (port 0 picks a free port). `factory` builds each worker's handler
/// on that worker's thread. Returns once every worker accepts. SIGPIPE is set to be ignored for
/// the process: registered-buffer sends are `write`s, which have no MSG_NOSIGNAL.
pub fn start<H, F>(addr: SocketAddr, config: Config, factory: F) -> io::Result<ServerHandle>
where
    H: Handler,
    F: Fn(WorkerId) -> H + Send + Sync + 'static,
{
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    sys::ignore_sigpipe()?;
    sys::ensure_nofile(u64::from(
        config.connections_per_worker_max + SPARE_FIXED_FILES,
    ))?;
    if addr.port() != 0 {
        // SO_REUSEPORT would let a second server (same user) silently share the port and take
        // part of its connections: refuse a port that is already bound.
        std::net::TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    }
    let first = sys::listener(addr, config.listen_backlog)?;
    let addr = SocketAddr::new(addr.ip(), sys::local_port(first.as_raw_fd())?);
    let mut listeners = vec![first];
    for _ in 1..config.workers {
        listeners.push(sys::listener(addr, config.listen_backlog)?);
    }
    let mailboxes = (0..config.workers)
        .map(|_| sys::eventfd().map(Mailbox::new))
        .collect::<io::Result<Vec<_>>>()?;
    let deflate = Arc::new(crate::handler::SharedDeflate::from_config(&config));
    // With a broker, the broker keeps the history for every node (Redis Streams): no store here.
    let history = config
        .history_limits()
        .filter(|_| config.brokers.is_empty())
        .map(|limits| Arc::new(HistoryStore::new(limits, config.history_topics_max)));
    let hub = crate::broker::Hub::new(&config)?;
    crate::runtime::sys::fix_mmap_threshold(config.allocator_mmap_threshold_bytes);
    let memory = Arc::new(crate::runtime::budget::MemoryBudget::for_config(&config));
    let publisher = Publisher::new(mailboxes.into(), deflate, history.clone(), memory.clone())
        .with_broker(hub.clone());
    let per_worker: Vec<_> = (0..config.workers)
        .map(|_| Arc::new(WorkerMetrics::default()))
        .collect();
    let metrics = Arc::new(Metrics {
        workers: per_worker.clone(),
        broker: hub.as_ref().map(|h| h.metrics.clone()),
        memory: Some(memory),
        history: history.clone(),
    });
    let cfg = Arc::new(config);
    let tls = match cfg.tls {
        Some(_) => Some(Arc::new(TlsShared::new(cfg.clone()).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("TLS: {e}"))
        })?)),
        None => None,
    };
    let factory = Arc::new(factory);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let setup = WorkerSetup {
            id: i as u16,
            cfg: cfg.clone(),
            listener,
            publisher: publisher.clone(),
            metrics: per_worker[i].clone(),
            all_metrics: metrics.clone(),
            tls: tls.clone(),
        };
        let core = (cfg.pin_workers && !cores.is_empty()).then(|| cores[i % cores.len()]);
        let (factory, tx) = (factory.clone(), tx.clone());
        let t = std::thread::Builder::new()
            .name(format!("ringws-w{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                worker::run(setup, || factory(i), tx)
            })?;
        threads.push(t);
    }
    let handle = ServerHandle {
        addr,
        publisher,
        metrics,
        threads,
        tls,
    };
    for _ in 0..cfg.workers {
        let res = rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("worker died at start")));
        if let Err(e) = res {
            handle.shutdown();
            let _ = handle.join();
            return Err(e);
        }
    }
    if let Some(hub) = &hub {
        // After the workers: an unreachable broker is retried in the background, the node
        // serves its own subscribers meanwhile.
        if let Err(e) = hub.spawn(&handle.publisher) {
            handle.shutdown();
            let _ = handle.join();
            return Err(e);
        }
    }
    Ok(handle)
}

/// Runs a server until SIGINT or SIGTERM, then shuts it down gracefully; SIGHUP reloads the
/// TLS certificates (a refused file is logged on stderr and the old certificates stay).
/// `on_ready` is called with the address once every worker accepts (the binary prints it).
pub fn run_until_signal<H, F>(
    addr: SocketAddr,
    config: Config,
    factory: F,
    on_ready: impl FnOnce(SocketAddr),
) -> io::Result<()>
where
    H: Handler,
    F: Fn(WorkerId) -> H + Send + Sync + 'static,
{
    // Blocked here, so the workers (spawned after) inherit the mask and only sigwait sees them.
    sys::block_shutdown_signals()?;
    let handle = start(addr, config, factory)?;
    on_ready(handle.local_addr());
    while sys::wait_signal()? == libc::SIGHUP {
        match handle.reload_tls() {
            Ok(()) => eprintln!("ringws: SIGHUP: TLS certificates reloaded"),
            Err(e) => eprintln!("ringws: SIGHUP: TLS reload refused, keeping the old: {e}"),
        }
    }
    handle.shutdown();
    handle.join()
}
