//! Helpers for the hardening tests: a seeded RNG, raw frames (valid or not), raw sockets that
//! reset, the /metrics baseline check, and the server binary as a child process.
//!
//! Declared from each `tests/hardening_*.rs` with `#[path = "common/hostile.rs"] mod hostile;`
//! next to `mod common;`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{READ_TIMEOUT, http};

/// How long the gauges may take to come back to their baseline. A safety net, not a timing
/// assertion: the close timeout of the configs used here is at most a few seconds.
pub const SETTLE: Duration = Duration::from_secs(30);

/// xorshift64*: small, seeded, reproducible (the seed is printed by the tests that use it).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A client frame with any first byte (FIN, RSV and opcode bits as given), masked with `mask`
/// when given: lets tests send frames the proto encoder refuses to build.
pub fn raw_frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A valid upgrade request.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A raw TCP connection with the safety-net read timeout.
pub fn raw_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Upgrades a raw connection by hand; the stream is positioned right after the 101 answer.
pub fn raw_upgrade(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut s = raw_connect(addr)?;
    s.write_all(upgrade_request("/").as_bytes())?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                String::from_utf8_lossy(&got).into_owned(),
            ));
        }
        got.push(byte[0]);
    }
    if !got.starts_with(b"HTTP/1.1 101") {
        return Err(io::Error::other(String::from_utf8_lossy(&got).into_owned()));
    }
    Ok(s)
}

/// SO_LINGER {on, 0}: dropping the socket then sends RST instead of FIN.
pub fn linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized, initialized option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        io::Error::last_os_error()
    );
}

/// Resets the connection (RST, not FIN).
pub fn reset(s: TcpStream) {
    linger_zero(&s);
    drop(s);
}

/// A server frame: its first byte (FIN, RSV, opcode) and its payload.
pub type Frame = (u8, Vec<u8>);

/// Everything the server sends until it ends TCP (EOF or reset), as server frames
/// `(first byte, payload)`, plus any trailing bytes that did not form a whole frame.
pub fn read_frames_to_end(s: &mut TcpStream) -> io::Result<(Vec<Frame>, Vec<u8>)> {
    let mut all = Vec::new();
    match s.read_to_end(&mut all) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(e),
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((first, payload, len)) = server_frame(&all[at..]) {
        frames.push((first, payload));
        at += len;
    }
    Ok((frames, all[at..].to_vec()))
}

/// Parses one unmasked server frame: (first byte, payload, bytes used).
fn server_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 || b[1] & 0x80 != 0 {
        return None;
    }
    let (len, hdr) = match b[1] & 0x7f {
        126 => (
            u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = b.get(hdr..hdr + len)?.to_vec();
    Some((b[0], payload, hdr + len))
}

/// The close code of a Close frame's payload (1005 when it has none).
pub fn close_code_of(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

/// All samples of `GET /metrics` as `name{labels}` → value.
pub fn metrics(addr: SocketAddr) -> HashMap<String, u64> {
    let text = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_or_default();
    if !text.starts_with("HTTP/1.1 200") {
        return HashMap::new();
    }
    parse_metrics(text.split_once("\r\n\r\n").map_or("", |(_, b)| b))
}

/// Samples of a Prometheus text body as `name{labels}` → value.
pub fn parse_metrics(body: &str) -> HashMap<String, u64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
        .collect()
}

/// The gauges that must come back after every scenario, with their idle values: the /metrics
/// connection that reads them is itself in the handshake state, with one descriptor and one slab
/// slot, while it is answered.
pub const BASELINE: [(&str, u64); 5] = [
    ("ringws_connections{state=\"handshaking\"}", 1),
    ("ringws_connections{state=\"open\"}", 0),
    ("ringws_connections{state=\"closing\"}", 0),
    ("ringws_fixed_files_in_use", 1),
    ("ringws_slab_slots", 1),
];

/// The same gauges read in process (`Metrics::render`, no /metrics connection): all back to 0.
/// For a TLS server, whose port answers plaintext HTTP with a 400.
pub const BASELINE_IN_PROCESS: [(&str, u64); 5] = [
    ("ringws_connections{state=\"handshaking\"}", 0),
    ("ringws_connections{state=\"open\"}", 0),
    ("ringws_connections{state=\"closing\"}", 0),
    ("ringws_fixed_files_in_use", 0),
    ("ringws_slab_slots", 0),
];

/// Polls /metrics until every baseline gauge is back (bounded by [`SETTLE`]); the last
/// differing gauges otherwise.
pub fn back_to_baseline(addr: SocketAddr) -> Result<(), String> {
    back_to_baseline_of(|| metrics(addr), &BASELINE)
}

/// Polls `sample` until every gauge of `baseline` is back (bounded by [`SETTLE`]).
pub fn back_to_baseline_of(
    mut sample: impl FnMut() -> HashMap<String, u64>,
    baseline: &[(&str, u64)],
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let m = sample();
        let off: Vec<String> = baseline
            .iter()
            .filter(|(n, want)| m.get(*n) != Some(want))
            .map(|(n, want)| format!("{n} = {:?} (want {want})", m.get(*n)))
            .collect();
        if off.is_empty() {
            return Ok(());
        }
        if start.elapsed() > SETTLE {
            return Err(off.join(", "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts the baseline with the scenario's name in the message.
pub fn assert_baseline(addr: SocketAddr, scenario: &str) {
    if let Err(off) = back_to_baseline(addr) {
        panic!("after {scenario}: leaked: {off}");
    }
}

/// Asserts [`BASELINE_IN_PROCESS`] on an in-process server.
pub fn assert_baseline_in_process(server: &ringws::ServerHandle, scenario: &str) {
    if let Err(off) = back_to_baseline_of(
        || parse_metrics(&server.metrics().render()),
        &BASELINE_IN_PROCESS,
    ) {
        panic!("after {scenario}: leaked: {off}");
    }
}

/// Polls until `cond` holds, bounded by `limit`; whether it did.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// `ringws serve` as a child process on a free port: the child and its address.
pub fn spawn_server(extra: &[&str]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringws"))
        .args(["serve", "--port", "0", "--no-pin"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("ringws starts");
    let addr = crate::common::listen_addr(&mut child);
    (child, addr)
}

/// Waits for the child to exit, at most `limit`; its status, or None (then it is killed).
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system, in clock ticks) used so far by this process's worker threads.
pub fn worker_cpu_ticks() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| stat.contains("(ringws-w"))
        .map(|stat| {
            // Fields after the ")" of the name: state is field 3; utime 14 and stime 15.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| {
                f.get(i - 3)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            num(14) + num(15)
        })
        .sum()
}

/// Shrinks a socket's kernel buffer (`SO_RCVBUF` or `SO_SNDBUF`), so that a peer that stops
/// reading or writing blocks after a few KiB instead of after the MiBs loopback autotunes to.
pub fn sock_buf(s: &TcpStream, which: libc::c_int, bytes: libc::c_int) {
    // SAFETY: a valid socket descriptor and a correctly sized, initialized option value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            which,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
}

/// Reads one whole unmasked server frame: (first byte, payload).
pub fn read_frame(s: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr)?;
    let len = match hdr[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    Ok((hdr[0], payload))
}

/// The resident memory of process `pid` (0 once it is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

/// Kills the server child however the test ends.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One peer of a [`flood`]: writes what it can of the same message, over and over, without
/// ever reading.
pub trait Pump: Send {
    /// Bytes written now (`WouldBlock` when none could be); another error ends this peer.
    fn pump(&mut self) -> io::Result<usize>;
}

/// A plain `ws://` non-reader: one pre-built masked frame on a non-blocking socket.
pub struct PlainPump {
    pub sock: TcpStream,
    pub frame: std::sync::Arc<Vec<u8>>,
    pub at: usize,
}

impl Pump for PlainPump {
    fn pump(&mut self) -> io::Result<usize> {
        let n = self.sock.write(&self.frame[self.at..])?;
        self.at = (self.at + n) % self.frame.len();
        Ok(n)
    }
}

/// Non-readers pumping on two threads (half the peers each), until [`Flood::stop`].
pub struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    pub fn start<P: Pump + 'static>(mut peers: Vec<P>) -> Flood {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let half = peers.split_off(peers.len() / 2);
        let threads = [peers, half]
            .into_iter()
            .map(|part| {
                let (stop, sent) = (stop.clone(), sent.clone());
                std::thread::spawn(move || pump_until(part, &stop, &sent))
            })
            .collect();
        Flood {
            stop,
            sent,
            threads,
        }
    }

    /// Stops every peer; the bytes they wrote.
    pub fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Pumps every peer until `stop`, counting the bytes written in `sent`.
fn pump_until<P: Pump>(
    mut peers: Vec<P>,
    stop: &std::sync::atomic::AtomicBool,
    sent: &std::sync::atomic::AtomicU64,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut alive = vec![true; peers.len()];
    while !stop.load(Relaxed) {
        let mut progress = false;
        for (i, p) in peers.iter_mut().enumerate() {
            if !alive[i] {
                continue;
            }
            match p.pump() {
                Ok(n) => {
                    progress = true;
                    sent.fetch_add(n as u64, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed by the server (1013, reset): that peer is done.
                Err(_) => alive[i] = false,
            }
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
