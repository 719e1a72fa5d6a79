//! Shared parts of the peer servers: the command line, a one-thread runtime, the listener and
//! the broadcast hub.
//!
//! Every peer is single-threaded (one tokio `current_thread` runtime and a `LocalSet`), so one
//! server uses one core, like `ringws serve --workers 1`.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;

use slab::Slab;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedSender;

/// What the server does with a text or binary message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Send it back unchanged to its sender.
    Echo,
    /// Send it to every connected client, the sender included (like `ringws --mode broadcast`).
    Broadcast,
}

/// `peer-NAME --port P [--mode echo|broadcast]`.
#[derive(Debug)]
pub struct Args {
    pub port: u16,
    pub mode: Mode,
}

pub const USAGE: &str = "usage: peer-NAME --port P [--mode echo|broadcast]";

/// Parses the arguments after the program name.
pub fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        port: 9001,
        mode: Mode::Echo,
    };
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
            _ => return Err(format!("unknown option {flag}")),
        }
    }
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

/// Binds 127.0.0.1:port and prints `listening on ws://127.0.0.1:PORT` (the real port if 0).
pub async fn listen(port: u16) -> TcpListener {
    let l = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
    println!("listening on ws://{}", l.local_addr().expect("local_addr"));
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
