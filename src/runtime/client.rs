//! The load generator's io_uring client worker: one thread, one ring, up to ~20k connections.
//!
//! Connections never use a regular descriptor: each one is a direct descriptor in the ring's
//! sparse fixed-file table (slot = connection index). One linked chain opens it:
//!
//! ```text
//! SOCKET(direct, slot i) → SETSOCKOPT(IP_BIND_ADDRESS_NO_PORT) → SETSOCKOPT(TCP_NODELAY)
//!   → BIND(127.0.0.k:0) → CONNECT(server) → LINK_TIMEOUT(connect timeout)
//! ```
//!
//! The first four are `CQE_SKIP_SUCCESS`: only a failure (or the connect) posts a completion.
//! After the connect, the upgrade request is sent and a multishot receive is armed on a
//! provided-buffer ring; it stays armed for the connection's life. The handshake's Accept is
//! checked by `proto::handshake::parse_response`, then bytes go through `proto::connection` in
//! the client role (which answers pings). Sends: at most one per connection in flight, queued
//! bytes leave together at the end of the loop turn. One `io_uring_enter` per turn
//! (submit and wait together), unless the submission queue fills up first.
//!
//! With `--deflate` every upgrade request offers permessage-deflate (`deflate::CLIENT_OFFER`,
//! no context takeover either way) and the answer sets what was agreed on the connection's core.
//! Compressed messages are inflated by the core with an inflater the worker lends (no zlib state
//! per connection, nothing allocated per message); echo sends of at least `COMPRESS_BYTES_MIN`
//! go out compressed by the worker's one deflater when that makes them smaller.
//!
//! With `wss://` each connection has a `tls_client::TlsSession` (rustls's unbuffered client):
//! after the connect the ClientHello leaves first, the upgrade request waits in `pending` (as
//! plaintext) until the TLS handshake is done, received records are decrypted from the
//! provided buffer and their plaintext goes through the same handshake and frame code, and each
//! turn's queued frames are encrypted together into the session's `out` before the send. A TLS
//! failure sends the alert rustls owes before the connection is shut down.
//!
//! The `handshakes` scenario closes each connection as soon as it is open (a Close frame, and
//! close_notify with TLS) and opens it again on the same slot, for the whole run.
//!
//! `user_data` = attempt (8 bits) << 40 | op (8 bits) << 32 | connection index (32 bits). A
//! connection that failed to open is retried on the same slot with the next attempt number, so
//! completions of an earlier attempt are recognised as stale.

use std::io;
use std::mem::{self, ManuallyDrop};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use io_uring::types::{DestinationSlot, Fixed, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use super::buffers::RecvPool;
use super::tls_client::{Progress, TlsSession, TlsTarget};
use crate::history::Position;
use crate::load::args::Scenario;
use crate::load::payload;
use crate::load::report::{Compression, Errors, Resumes, Tls};
use crate::load::seq::{SeqCounts, SeqTracker};
use crate::load::stats::{Broadcasts, Latency};
use crate::proto::connection::{Connection, Limits, MessageKind, Role, Sink, State};
use crate::proto::deflate::{self, Deflater, Inflater};
use crate::proto::frame;
use crate::proto::handshake::{self, ClientParsed};

/// Phases of a run, driven by the main thread through `Shared::phase`.
pub mod phase {
    /// Connections are being opened.
    pub const CONNECT: u8 = 0;
    /// The scenario runs (echo loops, the publisher publishes).
    pub const RUN: u8 = 1;
    /// The publisher stopped; the last deliveries are awaited.
    pub const DRAIN: u8 = 2;
    /// Workers return their results.
    pub const STOP: u8 = 3;
}

/// Largest handshake response the client accepts.
const RESPONSE_BYTES_MAX: usize = 8192;
/// Buffer group id of the receive buffer ring.
const BUF_GROUP: u16 = 7;
/// Echo sends shorter than this go out plain (the server's default `--deflate-bytes-min`).
const COMPRESS_BYTES_MIN: usize = crate::config::DEFLATE_COMPRESS_BYTES_MIN_DEFAULT;
/// zlib level of compressed sends: the fastest.
const COMPRESS_LEVEL: u8 = 1;
/// Gather buffers a worker keeps to lend again, and the largest one it keeps.
const LENT_BUFFERS_KEPT_MAX: usize = 16;
const LENT_BUFFER_KEPT_BYTES_MAX: usize = 1 << 20;

// Operations carried in `user_data`.
const OP_SOCKET: u8 = 1;
const OP_SOCKOPT: u8 = 2;
const OP_BIND: u8 = 3;
const OP_CONNECT: u8 = 4;
const OP_LINK_TIMEOUT: u8 = 5;
const OP_SEND: u8 = 6;
const OP_RECV: u8 = 7;
const OP_SHUTDOWN: u8 = 8;
const OP_CLOSE: u8 = 9;

fn user_data(attempt: u8, op: u8, conn: u32) -> u64 {
    (u64::from(attempt) << 40) | (u64::from(op) << 32) | u64::from(conn)
}

fn split_user_data(ud: u64) -> (u8, u8, u32) {
    ((ud >> 40) as u8, (ud >> 32) as u8, ud as u32)
}

/// `1` as a socket option value; a static so its address outlives every linked SETSOCKOPT.
static ONE: libc::c_int = 1;

/// What every worker reads: the scenario and where to connect.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub host: String,
    pub path: String,
    pub server: std::net::SocketAddrV4,
    /// Other nodes of the cluster: subscribers are spread round robin over `server` and these;
    /// the publisher stays on `server`.
    pub nodes: Vec<std::net::SocketAddrV4>,
    /// Sources are `src_base` and the `src_ips - 1` addresses after it.
    pub src_ips: u32,
    pub src_base: std::net::Ipv4Addr,
    pub size: usize,
    pub subscribers: u64,
    pub interval_ms: Option<u64>,
    pub inflight: u32,
    pub broadcasts: Option<u64>,
    pub duration_ms: u64,
    pub connect_timeout_ms: u64,
    pub connect_window: u32,
    /// Times a connection that failed to open (connect error, refused handshake) is retried.
    pub retries: u8,
    /// Back to back: a broadcast still incomplete after this long no longer holds the next one
    /// (a subscriber that closed mid-run must not stall the publisher).
    pub stall_ms: u64,
    /// Fanout through pubsub: subscribers send `sub <topic>` and count as open once the server
    /// answers `ok sub <topic>`; the publisher sends `pub <topic> <payload>` (text).
    pub pubsub_topic: Option<String>,
    /// Offer permessage-deflate; payloads are JSON-like, echo sends compressed.
    pub deflate: bool,
    /// Resume: subscribers subscribe with `psub`, drop about every `.0` ms (uniformly 0.5–1.5×)
    /// and come back `.1` ms later with `psub <topic> <last position>`.
    pub churn: Option<(u64, u64)>,
    /// `wss://`: the TLS configuration every connection shares (and its session cache).
    pub tls: Option<TlsTarget>,
}

/// Counters and the phase, shared by all workers and the main thread.
pub struct Shared {
    pub epoch: Instant,
    /// The wall clock at `epoch` (ns since 1970): fanout timestamps are `epoch_unix_ns` plus
    /// the time since `epoch`, so that the shards of one run (other processes, other machines)
    /// measure against the same clock.
    pub epoch_unix_ns: u64,
    pub phase: AtomicU8,
    /// Nanoseconds since `epoch` when the RUN phase began.
    pub run_start_ns: AtomicU64,
    pub open: AtomicU64,
    /// Nanoseconds since `epoch` when the latest connection finished its handshake.
    pub last_open_ns: AtomicU64,
    /// Connections that failed to open (connect or handshake).
    pub failed: AtomicU64,
    /// Echo round trips, or fanout deliveries.
    pub messages: AtomicU64,
    pub errors: AtomicU64,
    /// Subscribers open when the RUN phase began (what a complete broadcast reaches).
    pub subscribers_open: AtomicU64,
    /// Broadcasts the publisher has queued.
    pub published: AtomicU64,
    /// SIGINT or SIGTERM: stop now and report.
    pub interrupted: AtomicBool,
    /// The publisher is done (count or duration reached).
    pub publish_done: AtomicBool,
    /// Resume: subscribers dropped and not yet back (the drain waits for them).
    pub away: AtomicU64,
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            epoch_unix_ns: crate::load::stats::unix_ns(),
            phase: AtomicU8::new(phase::CONNECT),
            run_start_ns: AtomicU64::new(0),
            open: AtomicU64::new(0),
            last_open_ns: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            subscribers_open: AtomicU64::new(0),
            published: AtomicU64::new(0),
            publish_done: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            away: AtomicU64::new(0),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}

/// One worker's share of the connections.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub index: usize,
    /// Echo / subscriber / idle connections of this worker.
    pub conns: u32,
    /// Global index of this worker's first connection (spreads the source addresses).
    pub first_id: u64,
    /// This worker also owns the fanout publisher (one more connection, the last slot).
    pub publisher: bool,
    pub cpu: Option<usize>,
}

/// What a worker hands back when it stops.
#[derive(Clone, Default)]
pub struct Outcome {
    pub latency: Latency,
    pub broadcasts: Broadcasts,
    pub seq: SeqCounts,
    pub errors: Errors,
    pub messages: u64,
    pub published: u64,
    pub recv_enobufs: u64,
    /// Connection attempts repeated after a failure to open.
    pub retries: u64,
    /// The first Close frames the server sent (code, reason), for diagnosis.
    pub close_codes: Vec<(u16, String)>,
    pub compression: Compression,
    /// Resume: drops and resumes (latency quantiles are filled in by the merge).
    pub resumes: Resumes,
    /// Resume: from each reconnect to the server's `ok psub` answer.
    pub resume_latency: Latency,
    pub tls: Tls,
}

// ---------------------------------------------------------------------------------------------
// Provided-buffer ring
// ---------------------------------------------------------------------------------------------

// The receive buffers are the runtime's provided-buffer ring (`buffers::RecvPool`), held in a
// `ManuallyDrop`: their memory is deliberately never freed, because a receive still armed when
// the worker returns may be completed by the kernel while the ring is torn down asynchronously.
// A run's buffers are a few MiB per worker and the process exits right after.

// ---------------------------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not started yet.
    Idle,
    /// The socket/bind/connect chain is in flight.
    Connecting,
    /// Upgrade request sent, waiting for the 101.
    Handshaking,
    Open,
    Closed,
    /// Failed to open; its slot is being closed, then it connects again.
    Retrying,
    /// Resume: dropped on purpose; its slot is being closed, then it comes back and resumes.
    Away,
    /// `handshakes`: opened and closed on purpose; it connects again once the close completes.
    Recycling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Echo, subscriber or idle connection.
    Peer,
    Publisher,
}

struct Conn {
    phase: Phase,
    /// Which attempt at opening this is (see `user_data`).
    attempt: u8,
    kind: Kind,
    recv_armed: bool,
    send_busy: bool,
    /// Milliseconds since the epoch when the connect started (handshake timeout).
    started_ms: u32,
    key: [u8; handshake::KEY_LEN],
    proto: Connection,
    /// Response bytes until the handshake completes, then empty (no heap).
    response: Vec<u8>,
    /// Bytes queued for the next send.
    pending: Vec<u8>,
    /// Bytes of the send in flight (not touched until it completes).
    inflight: Vec<u8>,
    /// `wss://`: the TLS session (boxed: a plain connection pays one pointer).
    tls: Option<Box<TlsSession>>,
    /// The connection failed in TLS (counted as a TLS error, not a handshake or close).
    tls_error: bool,
    seq: SeqTracker,
    /// Pubsub: the server confirmed the subscription (always true otherwise).
    subscribed: bool,
    /// Echo: counter of the message in flight and when it was sent.
    echo_counter: u64,
    echo_sent_ns: u64,
    resume: ResumeState,
}

impl Conn {
    /// Closed, or closed and waiting to connect again: no sends, no receives.
    fn is_dead(&self) -> bool {
        matches!(
            self.phase,
            Phase::Closed | Phase::Retrying | Phase::Away | Phase::Recycling
        )
    }
}

/// A resuming subscriber's memory across its connections.
#[derive(Default)]
struct ResumeState {
    /// The position of the latest message it got: where it resumes from.
    last: Option<Position>,
    /// It dropped and has not had the server's answer to its resume yet.
    resuming: bool,
    /// When its reconnect started (time to resume).
    reconnect_ns: u64,
}

/// What a received message is checked against, and where results go.
struct RecvCtx<'a> {
    scenario: Scenario,
    kind: Kind,
    size: usize,
    template: &'a [u8],
    now_ns: u64,
    /// `now_ns` on the wall clock (`Shared::epoch_unix_ns`), what fanout timestamps use.
    wire_now_ns: u64,
    seq: &'a mut SeqTracker,
    echo_counter: u64,
    echo_ok: bool,
    topic: Option<&'a str>,
    subscribed: &'a mut bool,
    just_subscribed: bool,
    resume: &'a mut ResumeState,
    /// This receive completed a resume (the server answered `ok psub …`).
    just_resumed: bool,
    out: &'a mut Outcome,
    lend: &'a mut Lend,
}

/// What a worker lends its connections' cores for one message at a time: the inflater (our
/// offer asks the server not to keep its window, so no connection holds one) and buffers to
/// gather a message or inflate it into.
#[derive(Default)]
struct Lend {
    inflater: Option<Box<Inflater>>,
    buffers: Vec<Vec<u8>>,
}

struct ConnSink<'a, 'b> {
    pending: &'a mut Vec<u8>,
    ctx: &'a mut RecvCtx<'b>,
    closed_by_peer: bool,
}

impl Sink for ConnSink<'_, '_> {
    fn message(&mut self, _kind: MessageKind, payload: &[u8]) {
        let c = &mut *self.ctx;
        c.out.compression.messages_received += 1;
        c.out.compression.payload_bytes_received += payload.len() as u64;
        match (c.scenario, c.kind) {
            (Scenario::Echo, Kind::Peer) => {
                if payload::check_echo(payload, &c.template[..c.size], c.echo_counter) {
                    c.echo_ok = true;
                } else {
                    c.out.errors.mismatch += 1;
                }
            }
            (Scenario::Fanout, Kind::Peer) if !*c.subscribed => {
                let topic = c.topic.map(str::as_bytes);
                if payload.strip_prefix(b"ok sub ") == topic && topic.is_some() {
                    *c.subscribed = true;
                    c.just_subscribed = true;
                }
            }
            (Scenario::Resume, Kind::Peer) if !*c.subscribed => c.psub_answer(payload),
            (Scenario::Fanout, Kind::Peer) => c.fanout_delivery(payload),
            (Scenario::Resume, Kind::Peer) => {
                // `<position> <payload>`.
                let split = payload.iter().position(|&b| b == b' ');
                let pos =
                    split.and_then(|at| std::str::from_utf8(&payload[..at]).ok()?.parse().ok());
                match (split, pos) {
                    (Some(at), Some(pos)) => {
                        c.resume.last = Some(pos);
                        c.fanout_delivery(&payload[at + 1..]);
                    }
                    _ => c.out.errors.mismatch += 1,
                }
            }
            // The publisher may get its own broadcasts back; idle connections expect nothing.
            _ => {}
        }
    }

    fn close(&mut self, code: u16, reason: &str) {
        self.closed_by_peer = true;
        if self.ctx.out.close_codes.len() < 4 {
            self.ctx
                .out
                .close_codes
                .push((code, reason.chars().take(60).collect()));
        }
    }

    fn send_frame(&mut self, frame: &[u8]) {
        self.pending.extend_from_slice(frame);
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        self.ctx.lend.buffers.pop().unwrap_or_default()
    }

    fn give_buffer(&mut self, buf: Vec<u8>) {
        let kept = &mut self.ctx.lend.buffers;
        if kept.len() < LENT_BUFFERS_KEPT_MAX && buf.capacity() <= LENT_BUFFER_KEPT_BYTES_MAX {
            kept.push(buf);
        }
    }

    fn take_inflater(&mut self) -> Box<Inflater> {
        self.ctx.out.compression.compressed_received += 1;
        self.ctx.lend.inflater.take().unwrap_or_default()
    }

    fn give_inflater(&mut self, inflater: Box<Inflater>) {
        self.ctx.lend.inflater = Some(inflater);
    }
}

impl RecvCtx<'_> {
    /// One fanout message: its sequence number, latency and body checked.
    fn fanout_delivery(&mut self, payload: &[u8]) {
        match read_fanout(self.topic.is_some(), payload) {
            Some((seq, sent_ns))
                if payload.len() == self.size
                    && payload::check_fanout_body(
                        payload,
                        self.template,
                        header_bytes(self.topic),
                    ) =>
            {
                self.seq.observe(seq, &mut self.out.seq);
                self.out.broadcasts.record(seq, sent_ns, self.wire_now_ns);
                self.out
                    .latency
                    .record_ns(self.wire_now_ns.saturating_sub(sent_ns));
                self.out.messages += 1;
            }
            _ => self.out.errors.mismatch += 1,
        }
    }

    /// The answer to `psub <topic> [<position>]`: `ok psub <topic> <replayed>` or `… gap`.
    fn psub_answer(&mut self, payload: &[u8]) {
        let Some(topic) = self.topic else { return };
        let rest = payload
            .strip_prefix(b"ok psub ")
            .and_then(|r| r.strip_prefix(topic.as_bytes()))
            .and_then(|r| r.strip_prefix(b" "));
        let Some(rest) = rest else { return };
        let replayed = std::str::from_utf8(rest)
            .ok()
            .and_then(|n| n.parse::<u64>().ok());
        if replayed.is_none() && rest != b"gap" {
            self.out.errors.mismatch += 1;
            return;
        }
        *self.subscribed = true;
        self.just_subscribed = true;
        if std::mem::take(&mut self.resume.resuming) {
            self.just_resumed = true;
            let r = &mut self.out.resumes;
            r.resumed += 1;
            match replayed {
                Some(n) => r.recovered += n,
                None => r.gaps += 1,
            }
            let took = self.now_ns.saturating_sub(self.resume.reconnect_ns);
            self.out.resume_latency.record_ns(took);
        }
    }
}

/// Collects the frames the core sends on its own (a Close we start); nothing arrives through it.
struct FramesOnly<'a>(&'a mut Vec<u8>);

impl Sink for FramesOnly<'_> {
    fn message(&mut self, _kind: MessageKind, _payload: &[u8]) {}

    fn send_frame(&mut self, frame: &[u8]) {
        self.0.extend_from_slice(frame);
    }
}

/// Bytes before the filler of a fanout payload: binary, or text (pubsub).
fn header_bytes(topic: Option<&str>) -> usize {
    if topic.is_some() {
        payload::FANOUT_TEXT_HEADER_BYTES
    } else {
        payload::FANOUT_HEADER_BYTES
    }
}

fn read_fanout(text: bool, payload: &[u8]) -> Option<(u64, u64)> {
    if text {
        payload::read_fanout_text(payload)
    } else {
        payload::read_fanout(payload)
    }
}

/// Appends one masked frame holding `fill`'s payload to `out`; `compressed` sets RSV1 (the
/// payload is then a `Deflater`'s output).
fn queue_frame(
    kind: MessageKind,
    compressed: bool,
    proto: &mut Connection,
    out: &mut Vec<u8>,
    size: usize,
    fill: impl FnOnce(&mut [u8]),
) {
    let header = frame::header_len(size as u64, true);
    let start = out.len();
    out.resize(start + header + size, 0);
    let (head, body) = out[start..].split_at_mut(header);
    fill(body);
    let mut encoded = [0u8; frame::HEADER_BYTES_MAX];
    let n = proto.encode_message_header(kind, compressed, body, &mut encoded);
    assert_eq!(n, header, "header length of a masked frame");
    head.copy_from_slice(&encoded[..n]);
}

/// Compresses echo sends: the worker's one deflater and its scratch buffers.
#[derive(Default)]
struct Packer {
    deflater: Option<Deflater>,
    plain: Vec<u8>,
    packed: Vec<u8>,
}

impl Packer {
    /// Fills `plain` with `size` bytes from `fill`, compresses them into `packed` for a receiver
    /// window of `window_bits`; true if that made them smaller.
    fn pack(&mut self, window_bits: u8, size: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        if self.deflater.as_ref().map(Deflater::window_bits) != Some(window_bits) {
            // Once per worker: every connection to one server agrees the same window.
            self.deflater = Some(Deflater::new(COMPRESS_LEVEL, window_bits));
        }
        self.plain.clear();
        self.plain.resize(size, 0);
        fill(&mut self.plain);
        self.packed.clear();
        let deflater = self.deflater.as_mut().expect("made above");
        deflater.compress_message(&self.plain, &mut self.packed);
        self.packed.len() < size
    }
}

/// 16-byte random values from getrandom(2), fetched 4 KiB at a time.
struct Random {
    pool: Vec<u8>,
    used: usize,
}

impl Random {
    fn new() -> Random {
        Random {
            pool: vec![0; 4096],
            used: 4096,
        }
    }

    fn next16(&mut self) -> [u8; 16] {
        if self.used + 16 > self.pool.len() {
            let mut filled = 0;
            while filled < self.pool.len() {
                let rest = &mut self.pool[filled..];
                // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
                let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
                assert!(n > 0 || io::Error::last_os_error().kind() == io::ErrorKind::Interrupted);
                filled += n.max(0) as usize;
            }
            self.used = 0;
        }
        let out: [u8; 16] = self.pool[self.used..self.used + 16]
            .try_into()
            .expect("16 bytes");
        self.used += 16;
        out
    }
}

fn sockaddr(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

// ---------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------

/// Counters flushed to `Shared` once per loop turn.
#[derive(Default)]
struct Local {
    open: u64,
    failed: u64,
    errors: u64,
    messages_flushed: u64,
}

struct Worker {
    ring: IoUring,
    bufs: ManuallyDrop<RecvPool>,
    conns: Vec<Conn>,
    /// Connections with bytes queued since their last send.
    dirty: Vec<u32>,
    next_connect: u32,
    connecting: u32,
    /// Connections waiting to connect again: (when, index), in order of time.
    retry_queue: std::collections::VecDeque<(u64, u32)>,
    /// Connections below this index are past their handshake (open or closed): not scanned.
    scan_from: u32,
    /// [0] = the server, [1..] = source addresses. Boxed: linked SQEs point into it.
    addrs: Box<[libc::sockaddr_in]>,
    connect_timeout: Box<Timespec>,
    template: Vec<u8>,
    limits: Limits,
    lend: Lend,
    packer: Packer,
    /// `wss://`: where each record's plaintext is copied to be parsed (see `tls_client`).
    scratch: Vec<u8>,
    /// `wss://` `handshakes`: each connection's own client configuration and session cache.
    tls_configs: Vec<Option<Arc<rustls::ClientConfig>>>,
    random: Random,
    cqes: Vec<(u64, i32, u32)>,
    local: Local,
    out: Outcome,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    setup: Setup,
    seen_phase: u8,
    /// Failures already described on stderr.
    notes: u32,
    published: u64,
    last_publish_ns: u64,
    next_publish_ns: u64,
    last_scan_ms: u64,
    /// Resume: when each open subscriber drops next, (due ns, index), soonest first.
    drops: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u32)>>,
}

/// Runs one client worker until the main thread sets `phase::STOP`.
pub fn run_worker(setup: Setup, plan: Arc<Plan>, shared: Arc<Shared>) -> io::Result<Outcome> {
    if let Some(cpu) = setup.cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    }
    let mut w = Worker::new(setup, plan, shared)?;
    let res = w.run();
    if res.is_err() {
        // A dead worker must not hold the run: its connections count as failed.
        let left = u64::from(w.conns.len() as u32 - w.next_connect) + u64::from(w.connecting);
        w.shared.failed.fetch_add(left, Ordering::Relaxed);
    }
    res.map(|()| w.out)
}

fn recv_buffers(plan: &Plan, conns: u32) -> (u16, u32) {
    let bytes = (plan.size + 64).next_power_of_two().clamp(256, 65536) as u32;
    let want = (conns as usize).next_power_of_two().clamp(256, 16384);
    let by_memory = ((16usize << 20) / bytes as usize)
        .max(64)
        .next_power_of_two()
        / 2;
    (want.min(by_memory.max(64)) as u16, bytes)
}

impl Worker {
    fn new(setup: Setup, plan: Arc<Plan>, shared: Arc<Shared>) -> io::Result<Worker> {
        let slots = setup.conns + u32::from(setup.publisher);
        let cq = (slots * 2).next_power_of_two().clamp(4096, 65536);
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(cq)
            .build(4096)?;
        ring.submitter().register_files_sparse(slots.max(1))?;
        let (count, bytes) = recv_buffers(&plan, slots);
        let bufs = ManuallyDrop::new(RecvPool::new(&ring.submitter(), BUF_GROUP, count, bytes)?);
        let mut random = Random::new();
        // Once: `Limits::default()` builds a whole `Config`, which asks the OS for the core count.
        let limits = Limits::default();
        let mut conns = Vec::with_capacity(slots as usize);
        for i in 0..slots {
            let seed = u64::from_le_bytes(random.next16()[..8].try_into().expect("8 bytes"));
            let kind = if i == setup.conns {
                Kind::Publisher
            } else {
                Kind::Peer
            };
            conns.push(Conn {
                phase: Phase::Idle,
                attempt: 0,
                kind,
                recv_armed: false,
                send_busy: false,
                started_ms: 0,
                key: [0; handshake::KEY_LEN],
                proto: Connection::new(Role::Client, limits, seed),
                response: Vec::new(),
                pending: Vec::new(),
                inflight: Vec::new(),
                tls: None,
                tls_error: false,
                seq: SeqTracker::default(),
                subscribed: plan.pubsub_topic.is_none() || kind == Kind::Publisher,
                echo_counter: 0,
                echo_sent_ns: 0,
                resume: ResumeState::default(),
            });
        }
        let mut addrs = vec![sockaddr(*plan.server.ip(), plan.server.port())];
        for k in 0..plan.src_ips {
            let src = std::net::Ipv4Addr::from(u32::from(plan.src_base) + k);
            addrs.push(sockaddr(src, 0));
        }
        // After the sources: the other nodes (see `Worker::destination`).
        for n in &plan.nodes {
            addrs.push(sockaddr(*n.ip(), n.port()));
        }
        let timeout_ms = plan.connect_timeout_ms;
        let connect_timeout = Box::new(
            Timespec::new()
                .sec(timeout_ms / 1000)
                .nsec((timeout_ms % 1000) as u32 * 1_000_000),
        );
        Ok(Worker {
            ring,
            bufs,
            conns,
            dirty: Vec::new(),
            next_connect: 0,
            connecting: 0,
            scan_from: 0,
            retry_queue: std::collections::VecDeque::new(),
            addrs: addrs.into_boxed_slice(),
            connect_timeout,
            template: payload::template_for(plan.size, plan.pubsub_topic.is_some(), plan.deflate),
            limits,
            lend: Lend::default(),
            packer: Packer::default(),
            scratch: Vec::new(),
            tls_configs: vec![None; slots as usize],
            random,
            cqes: Vec::with_capacity(cq as usize),
            local: Local::default(),
            out: Outcome::default(),
            plan,
            shared,
            setup,
            seen_phase: phase::CONNECT,
            notes: 0,
            published: 0,
            last_publish_ns: 0,
            next_publish_ns: 0,
            last_scan_ms: 0,
            drops: std::collections::BinaryHeap::new(),
        })
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            let phase = self.shared.phase.load(Ordering::Acquire);
            if phase == phase::STOP {
                break;
            }
            if phase != self.seen_phase {
                self.enter_phase(phase)?;
            }
            let now_ns = self.shared.now_ns();
            self.start_connects(now_ns)?;
            if self.seen_phase == phase::RUN {
                self.publish(now_ns);
                self.churn(now_ns)?;
            }
            self.scan_timeouts(now_ns);
            self.flush_sends()?;
            self.bufs.publish();
            self.flush_counters();
            self.wait(self.wait_ns(now_ns))?;
            self.reap()?;
        }
        self.finish();
        Ok(())
    }

    fn enter_phase(&mut self, phase: u8) -> io::Result<()> {
        self.seen_phase = phase;
        if phase != phase::RUN {
            return Ok(());
        }
        let now_ns = self.shared.now_ns();
        for i in 0..self.conns.len() as u32 {
            if self.conns[i as usize].phase != Phase::Open {
                continue;
            }
            match self.plan.scenario {
                Scenario::Echo => self.send_echo(i, now_ns),
                Scenario::Handshakes => self.recycle(i)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Counts what never arrived at each subscriber.
    fn finish(&mut self) {
        self.flush_counters();
        if !self.plan.scenario.is_fanout() {
            return;
        }
        let published = self.shared.published.load(Ordering::Acquire);
        for c in &self.conns {
            if c.kind == Kind::Peer && c.phase == Phase::Open {
                c.seq.finish(published, &mut self.out.seq);
            } else if c.kind == Kind::Peer && c.resume.resuming {
                self.out.resumes.not_back += 1;
            }
        }
        self.out.errors.missing += self.out.seq.missing;
        self.out.errors.out_of_order += self.out.seq.out_of_order;
        self.out.published = self.published;
    }

    fn wait_ns(&self, now_ns: u64) -> u64 {
        const IDLE_NS: u64 = 50_000_000;
        if self.setup.publisher && self.seen_phase == phase::RUN {
            return match self.plan.interval_ms {
                Some(_) => self
                    .next_publish_ns
                    .saturating_sub(now_ns)
                    .clamp(100_000, IDLE_NS),
                None => 1_000_000,
            };
        }
        IDLE_NS
    }

    // --- submission ---------------------------------------------------------------------------

    fn ud(&self, op: u8, i: u32) -> u64 {
        user_data(self.conns[i as usize].attempt, op, i)
    }

    /// Index in `addrs` of the server a connection goes to: the publisher and, without other
    /// nodes, everyone to `server` (0); subscribers round robin over it and the nodes after
    /// the sources.
    fn destination(&self, global: u64, kind: Kind) -> usize {
        let nodes = self.plan.nodes.len() as u64;
        if nodes == 0 || kind == Kind::Publisher {
            return 0;
        }
        match global % (nodes + 1) {
            0 => 0,
            k => self.plan.src_ips as usize + k as usize,
        }
    }

    /// Pushes linked entries as a unit, submitting first if the queue lacks room.
    fn push(&mut self, entries: &[squeue::Entry]) -> io::Result<()> {
        loop {
            // SAFETY: every pointer in these entries (addresses, timespec, send buffers) points
            // into memory owned by the worker that stays put until the completion: `addrs` and
            // `connect_timeout` are boxed, a send's `inflight` vector is not touched until its
            // completion, and `ONE` is static.
            let pushed = unsafe { self.ring.submission().push_multiple(entries) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn start_connects(&mut self, now_ns: u64) -> io::Result<()> {
        while let Some(&(due, i)) = self.retry_queue.front() {
            if due > now_ns {
                break;
            }
            self.retry_queue.pop_front();
            self.start_connect(i, now_ns)?;
        }
        while self.connecting < self.plan.connect_window
            && (self.next_connect as usize) < self.conns.len()
        {
            let i = self.next_connect;
            self.next_connect += 1;
            self.connecting += 1;
            self.start_connect(i, now_ns)?;
        }
        Ok(())
    }

    fn start_connect(&mut self, i: u32, now_ns: u64) -> io::Result<()> {
        let global = self.setup.first_id + u64::from(i);
        let src = 1 + (global % u64::from(self.plan.src_ips)) as usize;
        let dst = self.destination(global, self.conns[i as usize].kind);
        // A retry or a `handshakes` cycle: the earlier attempt left the protocol state Closed.
        let fresh = self.conns[i as usize].phase != Phase::Idle;
        let seed = if fresh {
            u64::from_le_bytes(self.random.next16()[..8].try_into().expect("8 bytes"))
        } else {
            0
        };
        let c = &mut self.conns[i as usize];
        if fresh {
            c.proto = Connection::new(Role::Client, self.limits, seed);
            c.response = Vec::new();
            c.pending.clear();
            c.tls = None;
            c.tls_error = false;
            if c.resume.resuming {
                // Coming back after a drop: the same subscriber, so the same sequence.
                c.resume.reconnect_ns = now_ns;
            } else {
                c.seq = SeqTracker::default();
            }
            c.subscribed = self.plan.pubsub_topic.is_none() || c.kind == Kind::Publisher;
        }
        c.phase = Phase::Connecting;
        c.started_ms = (now_ns / 1_000_000) as u32;
        c.echo_sent_ns = now_ns; // `handshakes`: a handshake's latency runs from here
        let fd = Fixed(i);
        let link = squeue::Flags::IO_LINK;
        let quiet = link | squeue::Flags::SKIP_SUCCESS;
        let len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let slot = DestinationSlot::try_from_slot_target(i).expect("slot index in range");
        let int_len = mem::size_of::<libc::c_int>() as u32;
        let one = (&ONE as *const libc::c_int).cast();
        let chain = [
            opcode::Socket::new(libc::AF_INET, libc::SOCK_STREAM, 0)
                .file_index(Some(slot))
                .build()
                .flags(quiet)
                .user_data(self.ud(OP_SOCKET, i)),
            opcode::SetSockOpt::new(
                fd,
                libc::SOL_IP as u32,
                libc::IP_BIND_ADDRESS_NO_PORT as u32,
                one,
                int_len,
            )
            .build()
            .flags(quiet)
            .user_data(self.ud(OP_SOCKOPT, i)),
            opcode::SetSockOpt::new(
                fd,
                libc::IPPROTO_TCP as u32,
                libc::TCP_NODELAY as u32,
                one,
                int_len,
            )
            .build()
            .flags(quiet)
            .user_data(self.ud(OP_SOCKOPT, i)),
            opcode::Bind::new(
                fd,
                (&self.addrs[src] as *const libc::sockaddr_in).cast(),
                len,
            )
            .build()
            .flags(quiet)
            .user_data(self.ud(OP_BIND, i)),
            opcode::Connect::new(
                fd,
                (&self.addrs[dst] as *const libc::sockaddr_in).cast(),
                len,
            )
            .build()
            .flags(link)
            .user_data(self.ud(OP_CONNECT, i)),
            opcode::LinkTimeout::new(&*self.connect_timeout)
                .build()
                .user_data(self.ud(OP_LINK_TIMEOUT, i)),
        ];
        self.push(&chain)
    }

    fn arm_recv(&mut self, i: u32) -> io::Result<()> {
        self.conns[i as usize].recv_armed = true;
        let e = opcode::RecvMulti::new(Fixed(i), BUF_GROUP)
            .build()
            .user_data(self.ud(OP_RECV, i));
        self.push(&[e])
    }

    fn mark_dirty(&mut self, i: u32) {
        self.dirty.push(i);
    }

    /// One send per connection with queued bytes and none in flight.
    fn flush_sends(&mut self) -> io::Result<()> {
        let dirty = mem::take(&mut self.dirty);
        let mut failed = Vec::new();
        for &i in &dirty {
            let c = &mut self.conns[i as usize];
            if c.send_busy || c.is_dead() {
                continue;
            }
            debug_assert!(c.inflight.is_empty());
            if let Some(tls) = c.tls.as_mut() {
                // Plaintext waits until the handshake is done; then the turn's frames are
                // encrypted together, after any handshake records already in `out`.
                if !c.pending.is_empty() && !tls.is_handshaking() {
                    if let Err(e) = tls.seal(&c.pending) {
                        failed.push((i, e));
                        continue;
                    }
                    c.pending.clear();
                }
                if tls.out.is_empty() {
                    continue;
                }
                mem::swap(&mut tls.out, &mut c.inflight);
            } else {
                if c.pending.is_empty() {
                    continue;
                }
                mem::swap(&mut c.pending, &mut c.inflight);
            }
            c.send_busy = true;
            let (ptr, len) = (c.inflight.as_ptr(), c.inflight.len() as u32);
            let e = opcode::Send::new(Fixed(i), ptr, len)
                .build()
                .user_data(self.ud(OP_SEND, i));
            self.push(&[e])?;
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty; // keep the capacity
        }
        for (i, e) in failed {
            self.fail_tls(i, &e)?;
        }
        Ok(())
    }

    fn wait(&mut self, timeout_ns: u64) -> io::Result<()> {
        let ts = Timespec::new()
            .sec(timeout_ns / 1_000_000_000)
            .nsec((timeout_ns % 1_000_000_000) as u32);
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    // --- completions --------------------------------------------------------------------------

    fn reap(&mut self) -> io::Result<()> {
        let mut cqes = mem::take(&mut self.cqes);
        cqes.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &cqes {
            let (attempt, op, i) = split_user_data(ud);
            if attempt == self.conns[i as usize].attempt {
                self.complete(op, i, res, flags)?;
            } else {
                self.stale(op, i, flags);
            }
        }
        cqes.clear();
        self.cqes = cqes;
        Ok(())
    }

    /// A completion of an earlier attempt: release what it held, nothing else.
    fn stale(&mut self, op: u8, i: u32, flags: u32) {
        if op == OP_RECV {
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.bufs.put_back(bid);
            }
        } else if op == OP_SEND {
            let c = &mut self.conns[i as usize];
            c.send_busy = false;
            c.inflight.clear();
            if !c.pending.is_empty() {
                self.mark_dirty(i);
            }
        }
    }

    fn complete(&mut self, op: u8, i: u32, res: i32, flags: u32) -> io::Result<()> {
        match op {
            // Only failures post a completion (CQE_SKIP_SUCCESS); ECANCELED follows an earlier one.
            OP_SOCKET | OP_SOCKOPT | OP_BIND => {
                if res < 0 && self.conns[i as usize].phase == Phase::Connecting {
                    self.fail_open(i, op == OP_SOCKET)?;
                }
            }
            OP_CONNECT => self.on_connect(i, res)?,
            OP_LINK_TIMEOUT => {} // the connect's own completion tells what happened
            OP_SEND => self.on_send(i, res)?,
            OP_RECV => self.on_recv(i, res, flags)?,
            OP_CLOSE if self.conns[i as usize].phase == Phase::Retrying => {
                // Back off 100 ms, 200 ms, 400 ms … so a refusing server is not hammered.
                let c = &mut self.conns[i as usize];
                c.attempt += 1;
                let due = self.shared.now_ns() + (100_000_000 << (c.attempt - 1).min(6));
                self.retry_queue.push_back((due, i));
            }
            OP_CLOSE if self.conns[i as usize].phase == Phase::Away => {
                let c = &mut self.conns[i as usize];
                c.attempt = c.attempt.wrapping_add(1);
                let down_ns = self.plan.churn.map_or(0, |(_, down)| down * 1_000_000);
                self.retry_queue
                    .push_back((self.shared.now_ns() + down_ns, i));
            }
            OP_CLOSE if self.conns[i as usize].phase == Phase::Recycling => {
                if self.seen_phase != phase::RUN {
                    self.conns[i as usize].phase = Phase::Closed;
                    return Ok(());
                }
                let c = &mut self.conns[i as usize];
                c.attempt = c.attempt.wrapping_add(1); // what the last cycle left is now stale
                self.connecting += 1;
                self.scan_from = self.scan_from.min(i);
                self.start_connect(i, self.shared.now_ns())?;
            }
            OP_SHUTDOWN | OP_CLOSE => {}
            _ => unreachable!("unknown op {op} in user_data"),
        }
        Ok(())
    }

    fn on_connect(&mut self, i: u32, res: i32) -> io::Result<()> {
        if self.conns[i as usize].phase != Phase::Connecting {
            return Ok(()); // already failed by an earlier link of the chain
        }
        if res < 0 {
            return self.fail_open(i, false);
        }
        let key = handshake::client_key(self.random.next16());
        let c = &mut self.conns[i as usize];
        c.phase = Phase::Handshaking;
        c.key = key;
        handshake::write_client_request(
            &mut c.pending,
            &self.plan.host,
            &self.plan.path,
            &key,
            None,
        );
        if self.plan.deflate {
            // The offer goes before the blank line that ends the request.
            c.pending.truncate(c.pending.len() - 2);
            c.pending.extend_from_slice(b"Sec-WebSocket-Extensions: ");
            c.pending
                .extend_from_slice(deflate::CLIENT_OFFER.as_bytes());
            c.pending.extend_from_slice(b"\r\n\r\n");
        }
        if let Some(target) = &self.plan.tls {
            // The ClientHello goes first; the request waits in `pending` for the handshake.
            let config = match self.plan.scenario {
                Scenario::Handshakes => self.tls_configs[i as usize]
                    .get_or_insert_with(|| target.with_own_cache())
                    .clone(),
                _ => target.config.clone(),
            };
            match TlsSession::new(config, target) {
                Ok(tls) => c.tls = Some(tls),
                Err(e) => return self.fail_tls(i, &e),
            }
        }
        self.mark_dirty(i);
        self.arm_recv(i)
    }

    fn on_send(&mut self, i: u32, res: i32) -> io::Result<()> {
        let c = &mut self.conns[i as usize];
        if res < 0 || c.is_dead() {
            c.send_busy = false;
            c.inflight.clear();
            return if c.is_dead() {
                Ok(())
            } else {
                self.note(i, "send", res);
                self.fail(i)
            };
        }
        let n = res as usize;
        if n < c.inflight.len() {
            c.inflight.drain(..n);
            let (ptr, len) = (c.inflight.as_ptr(), c.inflight.len() as u32);
            let e = opcode::Send::new(Fixed(i), ptr, len)
                .build()
                .user_data(self.ud(OP_SEND, i));
            return self.push(&[e]);
        }
        c.inflight.clear();
        c.send_busy = false;
        if c.kind == Kind::Peer && self.plan.scenario != Scenario::Echo {
            // Idle subscribers hold no send memory.
            c.inflight = Vec::new();
            if c.pending.is_empty() {
                c.pending = Vec::new();
            }
            if let Some(tls) = c.tls.as_mut().filter(|t| t.out.is_empty()) {
                tls.out = Vec::new();
            }
        }
        if !c.pending.is_empty() {
            self.mark_dirty(i);
        }
        Ok(())
    }

    fn on_recv(&mut self, i: u32, res: i32, flags: u32) -> io::Result<()> {
        let more = cqueue::more(flags);
        if !more {
            self.conns[i as usize].recv_armed = false;
        }
        if res > 0 {
            let bid = cqueue::buffer_select(flags).expect("a receive with data names its buffer");
            let now_ns = self.shared.now_ns();
            let data = self.bufs.buffer(bid, res as u32);
            let mut env = Env {
                plan: &self.plan,
                template: &self.template,
                now_ns,
                epoch_unix_ns: self.shared.epoch_unix_ns,
                out: &mut self.out,
                lend: &mut self.lend,
                tls_error: None,
            };
            let c = &mut self.conns[i as usize];
            let outcome = match c.tls.take() {
                None => on_data(c, data, &mut env),
                Some(mut tls) => {
                    let o = on_tls_data(c, &mut tls, data, &mut env, &mut self.scratch);
                    c.tls = Some(tls);
                    o
                }
            };
            let tls_error = env.tls_error.take();
            self.bufs.put_back(bid);
            if let Some(e) = tls_error {
                return self.fail_tls(i, &e);
            }
            self.after_data(i, outcome, now_ns)?;
        } else if res == -libc::ENOBUFS {
            self.out.recv_enobufs += 1;
        } else if !self.conns[i as usize].is_dead() {
            // 0: the server ended TCP; < 0: reset or another error.
            self.note(i, "recv", res);
            return self.fail(i);
        }
        let c = &self.conns[i as usize];
        if !c.recv_armed && !c.is_dead() {
            self.arm_recv(i)?;
        }
        Ok(())
    }

    fn after_data(&mut self, i: u32, outcome: DataOutcome, now_ns: u64) -> io::Result<()> {
        match outcome {
            DataOutcome::Nothing => {}
            DataOutcome::Resumed => {
                self.connecting -= 1;
                self.local.open += 1;
                self.shared.away.fetch_sub(1, Ordering::AcqRel);
                self.schedule_drop(i, now_ns);
            }
            DataOutcome::Opened => {
                self.connecting -= 1;
                self.local.open += 1;
                self.count_deflate(i);
                if self.plan.scenario == Scenario::Handshakes && self.seen_phase == phase::RUN {
                    let c = &self.conns[i as usize];
                    let took_ns = now_ns.saturating_sub(c.echo_sent_ns);
                    self.out.latency.record_ns(took_ns);
                    self.out.messages += 1;
                    return self.recycle(i);
                }
                self.schedule_drop(i, now_ns);
                if self.seen_phase == phase::RUN && self.plan.scenario == Scenario::Echo {
                    self.send_echo(i, now_ns);
                }
            }
            DataOutcome::EchoDone => {
                let c = &mut self.conns[i as usize];
                self.out
                    .latency
                    .record_ns(now_ns.saturating_sub(c.echo_sent_ns));
                self.out.messages += 1;
                c.echo_counter += 1;
                if self.seen_phase == phase::RUN {
                    self.send_echo(i, now_ns);
                }
            }
            DataOutcome::HandshakeFailed => return self.fail_open(i, false),
            DataOutcome::Failed => {
                self.note(i, "protocol or close frame", 0);
                return self.fail(i);
            }
            DataOutcome::TlsFailed => unreachable!("handled with its error in on_recv"),
            DataOutcome::PeerClosed => {
                self.note(i, "TLS close_notify from the server", 0);
                return self.fail(i);
            }
        }
        let c = &self.conns[i as usize];
        if !c.pending.is_empty() || c.tls.as_ref().is_some_and(|t| !t.out.is_empty()) {
            self.mark_dirty(i);
        }
        Ok(())
    }

    /// An opened connection (not the publisher) that offered permessage-deflate: agreed or not.
    fn count_deflate(&mut self, i: u32) {
        let c = &self.conns[i as usize];
        if !self.plan.deflate || c.kind != Kind::Peer {
            return;
        }
        let counts = &mut self.out.compression;
        if c.proto.deflate().is_some() {
            counts.agreed += 1;
        } else {
            counts.declined += 1;
        }
    }

    // --- scenario -----------------------------------------------------------------------------

    /// Resume: when this subscriber drops next, 0.5–1.5 × `churn` ms from now.
    fn schedule_drop(&mut self, i: u32, now_ns: u64) {
        let Some((every_ms, _)) = self.plan.churn else {
            return;
        };
        if self.conns[i as usize].kind != Kind::Peer {
            return;
        }
        let r = u64::from_le_bytes(self.random.next16()[..8].try_into().expect("8 bytes"));
        let every_ns = every_ms * 1_000_000;
        let due = now_ns + every_ns / 2 + r % every_ns.max(1);
        self.drops.push(std::cmp::Reverse((due, i)));
    }

    /// Resume: drops the subscribers that are due (only those that have a position to resume
    /// from; the others try again later). The slot closes, then reconnects `down` ms later.
    fn churn(&mut self, now_ns: u64) -> io::Result<()> {
        while let Some(&std::cmp::Reverse((due, i))) = self.drops.peek() {
            if due > now_ns {
                break;
            }
            self.drops.pop();
            let c = &self.conns[i as usize];
            if c.phase != Phase::Open || !c.subscribed {
                continue;
            }
            if c.resume.last.is_none() {
                self.schedule_drop(i, now_ns);
                continue;
            }
            self.out.resumes.drops += 1;
            self.shared.away.fetch_add(1, Ordering::AcqRel);
            self.local.open = self.local.open.wrapping_sub(1);
            self.connecting += 1;
            self.close(i, true)?;
            let c = &mut self.conns[i as usize];
            c.phase = Phase::Away;
            c.resume.resuming = true;
        }
        Ok(())
    }

    fn send_echo(&mut self, i: u32, now_ns: u64) {
        let size = self.plan.size;
        let template = &self.template;
        let c = &mut self.conns[i as usize];
        if !c.proto.can_send_data() {
            return;
        }
        let counter = c.echo_counter;
        let fill = |body: &mut [u8]| payload::write_echo(body, template, counter);
        match c.proto.deflate() {
            Some(d) if size >= COMPRESS_BYTES_MIN => {
                let p = &mut self.packer;
                let compressed = p.pack(d.send_window_bits, size, fill);
                let body = if compressed { &p.packed } else { &p.plain };
                let (proto, pending) = (&mut c.proto, &mut c.pending);
                queue_frame(
                    MessageKind::Binary,
                    compressed,
                    proto,
                    pending,
                    body.len(),
                    |b| b.copy_from_slice(body),
                );
                self.out.compression.compressed_sent += u64::from(compressed);
            }
            _ => queue_frame(
                MessageKind::Binary,
                false,
                &mut c.proto,
                &mut c.pending,
                size,
                fill,
            ),
        }
        c.echo_sent_ns = now_ns;
        self.mark_dirty(i);
    }

    fn publish(&mut self, now_ns: u64) {
        if !self.setup.publisher || self.shared.publish_done.load(Ordering::Relaxed) {
            return;
        }
        let run_start = self.shared.run_start_ns.load(Ordering::Acquire);
        let limit_reached = self.plan.broadcasts.is_some_and(|b| self.published >= b);
        if limit_reached || now_ns.saturating_sub(run_start) >= self.plan.duration_ms * 1_000_000 {
            self.shared
                .published
                .store(self.published, Ordering::Release);
            self.shared.publish_done.store(true, Ordering::Release);
            return;
        }
        let i = self.setup.conns;
        if self.conns[i as usize].phase != Phase::Open {
            return;
        }
        let due = match self.plan.interval_ms {
            Some(ms) => {
                if self.next_publish_ns == 0 {
                    self.next_publish_ns = now_ns;
                }
                let due = now_ns >= self.next_publish_ns;
                if due {
                    self.next_publish_ns += ms * 1_000_000;
                }
                due
            }
            None => {
                // Subscribers still open (some may close mid-run): what a complete broadcast
                // reaches. A broadcast incomplete for `stall_ms` stops holding the next one.
                let open = self.shared.open.load(Ordering::Acquire).saturating_sub(1);
                let subscribers = open
                    .min(self.shared.subscribers_open.load(Ordering::Acquire))
                    .max(1);
                let complete = self.shared.messages.load(Ordering::Acquire) / subscribers;
                let stalled =
                    now_ns.saturating_sub(self.last_publish_ns) > self.plan.stall_ms * 1_000_000;
                self.published.saturating_sub(complete) < u64::from(self.plan.inflight) || stalled
            }
        };
        if due {
            self.publish_one(i);
        }
    }

    fn publish_one(&mut self, i: u32) {
        let seq = self.published;
        let size = self.plan.size;
        let sent_ns = self.shared.now_ns();
        let wire_sent_ns = sent_ns + self.shared.epoch_unix_ns;
        let template = &self.template;
        let c = &mut self.conns[i as usize];
        // Sent plain even with deflate agreed: the server compresses the broadcast once.
        match self.plan.pubsub_topic.as_deref() {
            None => queue_frame(
                MessageKind::Binary,
                false,
                &mut c.proto,
                &mut c.pending,
                size,
                |body| payload::write_fanout(body, template, seq, wire_sent_ns),
            ),
            Some(topic) => {
                // `pub <topic> <payload>`: subscribers receive the payload alone.
                let prefix = 5 + topic.len();
                queue_frame(
                    MessageKind::Text,
                    false,
                    &mut c.proto,
                    &mut c.pending,
                    prefix + size,
                    |body| {
                        body[..4].copy_from_slice(b"pub ");
                        body[4..prefix - 1].copy_from_slice(topic.as_bytes());
                        body[prefix - 1] = b' ';
                        payload::write_fanout_text(
                            &mut body[prefix..],
                            template,
                            seq,
                            wire_sent_ns,
                        );
                    },
                )
            }
        }
        self.published += 1;
        self.last_publish_ns = sent_ns;
        self.shared
            .published
            .store(self.published, Ordering::Release);
        self.mark_dirty(i);
    }

    // --- failures and timeouts ----------------------------------------------------------------

    /// The connection could not be opened (connect or handshake).
    fn fail_open(&mut self, i: u32, socket_failed: bool) -> io::Result<()> {
        let c = &self.conns[i as usize];
        if c.attempt < self.plan.retries && self.seen_phase == phase::CONNECT {
            self.out.retries += 1;
            if socket_failed {
                let c = &mut self.conns[i as usize];
                c.attempt += 1;
                c.phase = Phase::Retrying;
                let due = self.shared.now_ns() + (100_000_000 << (c.attempt - 1).min(6));
                self.retry_queue.push_back((due, i));
                return Ok(());
            }
            self.close(i, true)?;
            self.conns[i as usize].phase = Phase::Retrying;
            return Ok(());
        }
        if c.tls_error {
            self.out.errors.tls += 1;
        } else if c.phase == Phase::Handshaking {
            self.out.errors.handshake += 1;
        } else {
            self.out.errors.connect += 1;
        }
        self.connecting -= 1;
        self.local.failed += 1;
        self.close(i, !socket_failed)
    }

    /// Says why the first few connections of this worker failed (stderr), for diagnosis.
    fn note(&mut self, i: u32, what: &str, res: i32) {
        if self.notes < 3 && self.conns[i as usize].phase == Phase::Open {
            self.notes += 1;
            let err = io::Error::from_raw_os_error(-res);
            let why = if res < 0 {
                err.to_string()
            } else {
                format!("result {res}")
            };
            eprintln!(
                "ringws-load: worker {} connection {i}: {what}: {why}",
                self.setup.index
            );
        }
    }

    /// An open connection ended or failed.
    fn fail(&mut self, i: u32) -> io::Result<()> {
        match self.conns[i as usize].phase {
            Phase::Connecting | Phase::Handshaking => return self.fail_open(i, false),
            Phase::Closed | Phase::Retrying | Phase::Away | Phase::Recycling | Phase::Idle => {
                return Ok(());
            }
            Phase::Open => {}
        }
        if self.conns[i as usize].tls_error {
            self.out.errors.tls += 1;
        } else {
            self.out.errors.closed += 1;
        }
        self.local.open = self.local.open.wrapping_sub(1);
        self.close(i, true)
    }

    /// The TLS session failed (a refused certificate, an alert, a bad record): the alert rustls
    /// owes the server (queued in the session's `out`) leaves before the shutdown.
    fn fail_tls(&mut self, i: u32, e: &rustls::Error) -> io::Result<()> {
        self.conns[i as usize].tls_error = true;
        if self.notes < 3 {
            self.notes += 1;
            eprintln!(
                "ringws-load: worker {} connection {i}: TLS: {e}",
                self.setup.index
            );
        }
        self.fail(i)
    }

    /// `handshakes`: closes an open connection on purpose (a Close frame, and close_notify with
    /// TLS, leave with the shutdown); it connects again once the close completes.
    fn recycle(&mut self, i: u32) -> io::Result<()> {
        let c = &mut self.conns[i as usize];
        c.proto.close(1000, "", &mut FramesOnly(&mut c.pending));
        if let Some(tls) = c.tls.as_mut().filter(|t| !t.is_handshaking()) {
            let sealed = tls.seal(&c.pending).and_then(|()| tls.close_notify());
            c.pending.clear();
            if let Err(e) = sealed {
                return self.fail_tls(i, &e);
            }
        }
        self.local.open = self.local.open.wrapping_sub(1);
        self.close(i, true)?;
        self.conns[i as usize].phase = Phase::Recycling;
        Ok(())
    }

    /// Marks the connection closed and releases its descriptor (shutdown ends the receive).
    fn close(&mut self, i: u32, has_socket: bool) -> io::Result<()> {
        let c = &mut self.conns[i as usize];
        c.phase = Phase::Closed;
        c.proto.transport_closed();
        c.response = Vec::new();
        // What is still owed to the server (a Close frame, a TLS alert or close_notify) leaves
        // first, unless a send is in flight (order) or the socket never connected.
        let last = match c.tls.as_mut() {
            Some(tls) => mem::take(&mut tls.out),
            None => mem::take(&mut c.pending),
        };
        c.pending = Vec::new();
        if !has_socket {
            return Ok(());
        }
        if !c.send_busy && !last.is_empty() {
            c.inflight = last;
            c.send_busy = true;
            let (ptr, len) = (c.inflight.as_ptr(), c.inflight.len() as u32);
            let send = opcode::Send::new(Fixed(i), ptr, len)
                .build()
                .flags(squeue::Flags::IO_HARDLINK)
                .user_data(self.ud(OP_SEND, i));
            self.push(&[send])?;
        }
        let chain = [
            // A hard link: the close runs even when the shutdown fails (ENOTCONN after a failed
            // connect), so the slot is always released and a retry always starts.
            opcode::Shutdown::new(Fixed(i), libc::SHUT_RDWR)
                .build()
                .flags(squeue::Flags::IO_HARDLINK)
                .user_data(self.ud(OP_SHUTDOWN, i)),
            opcode::Close::new(Fixed(i))
                .build()
                .user_data(self.ud(OP_CLOSE, i)),
        ];
        self.push(&chain)
    }

    /// Handshakes past the connect timeout fail (the connect itself has a linked timeout).
    fn scan_timeouts(&mut self, now_ns: u64) {
        let now_ms = now_ns / 1_000_000;
        if self.connecting == 0 || now_ms < self.last_scan_ms + 250 {
            return;
        }
        self.last_scan_ms = now_ms;
        let limit = self.plan.connect_timeout_ms;
        while self.scan_from < self.next_connect
            && matches!(
                self.conns[self.scan_from as usize].phase,
                Phase::Open | Phase::Closed
            )
        {
            self.scan_from += 1;
        }
        for i in self.scan_from..self.next_connect {
            let c = &self.conns[i as usize];
            if c.phase == Phase::Handshaking
                && now_ms.saturating_sub(u64::from(c.started_ms)) > limit
            {
                // Errors here are a full queue that could not be flushed: reported by the loop.
                let _ = self.fail_open(i, false);
            }
        }
    }

    fn flush_counters(&mut self) {
        let s = &self.shared;
        let l = &mut self.local;
        if l.open != 0 {
            if l.open < u64::MAX / 2 {
                s.last_open_ns.fetch_max(s.now_ns(), Ordering::Relaxed);
            }
            s.open.fetch_add(l.open, Ordering::Relaxed);
            l.open = 0;
        }
        if l.failed != 0 {
            s.failed.fetch_add(l.failed, Ordering::Relaxed);
            l.failed = 0;
        }
        let errors = self.out.errors.total();
        if errors != l.errors {
            s.errors.fetch_add(errors - l.errors, Ordering::Relaxed);
            l.errors = errors;
        }
        let m = self.out.messages;
        if m != l.messages_flushed {
            s.messages
                .fetch_add(m - l.messages_flushed, Ordering::Release);
            l.messages_flushed = m;
        }
    }
}

/// What one receive meant for its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataOutcome {
    Nothing,
    Opened,
    /// Resume: a subscriber that dropped is back and the server answered its `psub`.
    Resumed,
    EchoDone,
    HandshakeFailed,
    Failed,
    /// The TLS session failed (its alert is queued).
    TlsFailed,
    /// The server sent TLS close_notify.
    PeerClosed,
}

impl DataOutcome {
    fn failed(self) -> bool {
        matches!(
            self,
            DataOutcome::HandshakeFailed | DataOutcome::Failed | DataOutcome::TlsFailed
        )
    }

    /// The outcome of a receive that held several records: a failure wins, else the last event.
    fn then(self, next: DataOutcome) -> DataOutcome {
        if self.failed() || next == DataOutcome::Nothing {
            self
        } else {
            next
        }
    }
}

/// The worker's side of one receive: what bytes are checked against, where results go.
struct Env<'a> {
    plan: &'a Plan,
    template: &'a [u8],
    now_ns: u64,
    /// `Shared::epoch_unix_ns`.
    epoch_unix_ns: u64,
    out: &'a mut Outcome,
    lend: &'a mut Lend,
    /// Why the TLS session failed, when it did.
    tls_error: Option<rustls::Error>,
}

/// Feeds received TLS records to rustls; each record's plaintext, copied into `scratch` (rustls
/// lends it read-only), goes to the handshake or the protocol core as in `on_data`.
fn on_tls_data(
    c: &mut Conn,
    tls: &mut TlsSession,
    data: &mut [u8],
    env: &mut Env<'_>,
    scratch: &mut Vec<u8>,
) -> DataOutcome {
    let was_handshaking = tls.is_handshaking();
    let mut outcome = DataOutcome::Nothing;
    let progress = tls.receive(data, &mut |plain| {
        scratch.clear();
        scratch.extend_from_slice(plain);
        outcome = outcome.then(on_data(c, scratch, env));
        !outcome.failed()
    });
    if was_handshaking && !tls.is_handshaking() {
        if tls.resumed() {
            env.out.tls.handshakes_resumed += 1;
        } else {
            env.out.tls.handshakes_full += 1;
        }
    }
    match progress {
        Err(e) => {
            env.tls_error = Some(e);
            DataOutcome::TlsFailed
        }
        Ok(_) if outcome.failed() => outcome,
        Ok(Progress::PeerClosed) => DataOutcome::PeerClosed,
        Ok(Progress::Handshaking | Progress::Traffic) => outcome,
    }
}

/// Feeds received bytes to the handshake or the protocol core.
fn on_data(c: &mut Conn, data: &mut [u8], env: &mut Env<'_>) -> DataOutcome {
    match c.phase {
        Phase::Handshaking => on_response(c, data, env),
        Phase::Open => on_frames(c, data, env),
        _ => DataOutcome::Nothing,
    }
}

fn on_response(c: &mut Conn, data: &mut [u8], env: &mut Env<'_>) -> DataOutcome {
    c.response.extend_from_slice(data);
    let offered = env.plan.deflate;
    let parsed =
        handshake::parse_response_offering(&c.response, &c.key, RESPONSE_BYTES_MAX, offered);
    let (header_len, agreed) = match parsed {
        Ok((ClientParsed::Incomplete, _)) => return DataOutcome::Nothing,
        Ok((ClientParsed::Accepted { header_len, .. }, agreed)) => (header_len, agreed),
        Err(_) => return DataOutcome::HandshakeFailed,
    };
    c.phase = Phase::Open;
    // None when the server declined: the connection stays plain.
    c.proto.set_deflate(agreed);
    if let Some(topic) = env.plan.pubsub_topic.as_deref().filter(|_| !c.subscribed) {
        // Resume: `psub <topic>`, or `psub <topic> <position>` when coming back.
        let command = match (env.plan.churn, c.resume.last) {
            (None, _) => format!("sub {topic}"),
            (Some(_), Some(p)) if c.resume.resuming => format!("psub {topic} {p}"),
            (Some(_), _) => format!("psub {topic}"),
        };
        queue_frame(
            MessageKind::Text,
            false,
            &mut c.proto,
            &mut c.pending,
            command.len(),
            |body| body.copy_from_slice(command.as_bytes()),
        );
    }
    let mut rest = mem::take(&mut c.response);
    let mut outcome = DataOutcome::Nothing;
    if rest.len() > header_len {
        let len = rest.len();
        outcome = on_frames(c, &mut rest[header_len..len], env);
    }
    match outcome {
        DataOutcome::Failed => DataOutcome::HandshakeFailed,
        DataOutcome::Resumed => DataOutcome::Resumed,
        _ if c.subscribed => DataOutcome::Opened,
        _ => DataOutcome::Nothing, // counts as open once the subscription is confirmed
    }
}

fn on_frames(c: &mut Conn, data: &mut [u8], env: &mut Env<'_>) -> DataOutcome {
    env.out.compression.wire_bytes_received += data.len() as u64;
    let mut ctx = RecvCtx {
        scenario: env.plan.scenario,
        kind: c.kind,
        size: env.plan.size,
        template: env.template,
        now_ns: env.now_ns,
        wire_now_ns: env.now_ns + env.epoch_unix_ns,
        seq: &mut c.seq,
        echo_counter: c.echo_counter,
        echo_ok: false,
        topic: env.plan.pubsub_topic.as_deref(),
        subscribed: &mut c.subscribed,
        just_subscribed: false,
        resume: &mut c.resume,
        just_resumed: false,
        out: env.out,
        lend: env.lend,
    };
    let mut sink = ConnSink {
        pending: &mut c.pending,
        ctx: &mut ctx,
        closed_by_peer: false,
    };
    let res = c.proto.receive(data, &mut sink);
    let closed_by_peer = sink.closed_by_peer;
    let echo_ok = ctx.echo_ok;
    let just_subscribed = ctx.just_subscribed;
    let just_resumed = ctx.just_resumed;
    if res.is_err() {
        ctx.out.errors.protocol += 1;
        return DataOutcome::Failed;
    }
    if closed_by_peer || c.proto.state() == State::Closed {
        return DataOutcome::Failed;
    }
    if just_resumed {
        return DataOutcome::Resumed;
    }
    if just_subscribed {
        return DataOutcome::Opened;
    }
    if echo_ok {
        DataOutcome::EchoDone
    } else {
        DataOutcome::Nothing
    }
}
