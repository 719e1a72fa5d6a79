//! One worker: a ring, a listener, a slab of connections, a timer wheel and a handler, on one
//! thread. The loop, once per turn:
//!
//! ```text
//! fire timers ─► run deferred work and settle touched slots (start sends, re-arm receives,
//! advance closes, free slots) ─► push ops into the ring ─► one submit_and_wait (timeout = next
//! timer) ─► copy completions out ─► run each completion
//! ```
//!
//! Completions are run from the loop, never from inside the reaper, and anything they change is
//! settled once at the end of the turn, so all frames queued for a connection in one turn leave
//! in one send.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::Sender;

use super::budget::Turn;
use super::buffers::{RecvPool, SendArena, SendOp, SendPool, SendQueue};
use super::ring::{Accepted, Completion, Event, Hangup, Key, Op, Received, Ring, Sent};
use super::slots::{ConnState, Phase, Slot, Slots, TimerKind, flag};
use super::sys;
use super::tls::{TlsConn, TlsFailure, TlsShared, WorkerTls};
use crate::config::{BackpressurePolicy, Config};
use crate::handler::{
    Backpressure, Conn, ConnId, ConnOps, Frame, Handler, Mail, Message, OpenDecision, Publisher,
    Resume, with_deflater,
};
use crate::history::Position;
use crate::metrics::{Metrics, WorkerMetrics, add, dec};
use crate::proto::connection::{self, Connection, Limits, MessageKind, Role, Sink, State};
use crate::proto::deflate::{self, Inflater};
use crate::proto::error::close_code;
use crate::proto::frame::{self, HEADER_BYTES_MAX, OpCode};
use crate::proto::handshake::{self, Parsed, Request};
use crate::timer::TimerWheel;
use crate::topics::Sequenced;

/// Fixed-file slots beyond the connection limit, so that a connection past the limit can still
/// be accepted and answered 503 instead of being left in the backlog.
pub const SPARE_FIXED_FILES: u32 = 64;
/// Reassembly buffers kept for reuse per worker, and the largest capacity kept.
const GATHER_POOL_KEPT_MAX: usize = 64;
const GATHER_KEPT_BYTES_MAX: usize = 1 << 20;
/// Shared frames up to this size are copied into each connection's queue rather than referenced.
const SHARED_COPY_BYTES_MAX: usize = 256;
/// Buffer group id of the receive pool.
const RECV_GROUP: u16 = 0;
/// Timer wheel resolution.
const TICK_MS: u64 = 10;
const WHEEL_SLOTS: usize = 4096;
/// After the close timeout of a shutdown, how long forced closes may take before the worker
/// leaves anyway.
const STOP_GRACE_MS: u64 = 1000;

/// Everything a worker thread needs, built by the server.
pub(crate) struct WorkerSetup {
    pub id: u16,
    pub cfg: Arc<Config>,
    pub listener: OwnedFd,
    pub publisher: Publisher,
    pub metrics: Arc<WorkerMetrics>,
    pub all_metrics: Arc<Metrics>,
    /// `wss://`: the server's TLS configuration.
    pub tls: Option<Arc<TlsShared>>,
}

/// Work found during a turn and run before the turn ends.
enum Deferred {
    Close(Key, u16, Box<str>),
    Publish(Arc<str>, Frame, Option<Arc<Sequenced>>),
    /// A positioned subscription started: the handler hears of it (`on_resume`), then what it
    /// replays is queued behind the handler's own answer. From the broker, it names the
    /// request it answers and the position the subscriber is at once it runs (set then, not
    /// when the mail came: live messages queued before it must still pass it by).
    Resumed(Key, Arc<str>, Resume, Vec<Frame>, Option<(u64, Position)>),
    Broadcast(Frame),
    Backpressure(Key, usize, Backpressure),
}

/// State that callbacks may touch besides their own slot.
struct Shared {
    worker: u16,
    ops: Vec<Op>,
    pool: super::buffers::SendPool,
    topics: HashMap<Box<str>, Vec<Key>>,
    /// Positioned subscribers (resume) by topic, each with the latest position it was given:
    /// a live message at or before it was already replayed, and is skipped.
    positioned: HashMap<Box<str>, Vec<(Key, Position)>>,
    /// Numbers the resumes sent to the broker's history, to match each answer to its request.
    resume_req: u64,
    /// Resumes sent to the broker's history and not yet answered, and the most there may be.
    resumes_pending: usize,
    resumes_pending_max: usize,
    deferred: VecDeque<Deferred>,
    dirty: Vec<Key>,
    metrics: Arc<WorkerMetrics>,
    all_metrics: Arc<Metrics>,
    publisher: Publisher,
    send_queue_bytes_max: usize,
    policy: BackpressurePolicy,
    /// Batches of at least this many bytes go out with SEND_ZC (0: never).
    zc_bytes_min: usize,
    /// Reassembly buffers lent to connections while they gather a message (bounded).
    gather_pool: Vec<Vec<u8>>,
    /// permessage-deflate: the inflater lent for each compressed message (no context takeover).
    inflater: Option<Box<Inflater>>,
    /// Output of the compressor, reused.
    deflate_out: Vec<u8>,
    deflate_level: u8,
    deflate_bytes_min: usize,
    /// TLS: the plaintext of one receive buffer, parsed in place by the core (reused).
    tls_plain: Vec<u8>,
    /// Reading less when queued output is high (`budget.rs`).
    mem: super::budget::Memory,
}

impl Shared {
    fn id(&self, key: Key) -> ConnId {
        ConnId::new(self.worker, key.index, key.generation)
    }

    /// Queues an op on the slot (counted in flight).
    fn submit(&mut self, st: &mut ConnState, op: Op) {
        st.ops += 1;
        self.ops.push(op);
    }

    /// Counts a connection that agreed to deflate with `bits` in or out: the gauge, and the
    /// server-wide count of receivers of 15-bit compressed shared frames.
    fn count_deflate(&mut self, bits: u8, opened: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let receivers = &self.publisher.deflate().receivers;
        let full_window = bits == deflate::WINDOW_BITS_MAX;
        if opened {
            add(&self.metrics.deflate_connections, 1);
            if full_window {
                receivers.fetch_add(1, Relaxed);
            }
        } else {
            dec(&self.metrics.deflate_connections);
            if full_window {
                receivers.fetch_sub(1, Relaxed);
            }
        }
    }

    /// Whether this worker has a subscriber of `topic`, plain or positioned.
    fn subscribed(&self, topic: &str) -> bool {
        self.topics.contains_key(topic) || self.positioned.contains_key(topic)
    }

    /// Tells the broker when this worker's first subscriber of `topic` came, or its last left
    /// (`before`: whether it had one before the change).
    fn demand_change(&self, topic: &str, before: bool) {
        let now = self.subscribed(topic);
        if now != before {
            self.publisher.demand(topic, now);
        }
    }

    fn touch(&mut self, key: Key, st: &mut ConnState) {
        if !st.has(flag::DIRTY) {
            st.set(flag::DIRTY);
            self.dirty.push(key);
        }
    }
}

/// One connection, seen from inside a callback.
struct Ctx<'a> {
    key: Key,
    st: &'a mut ConnState,
    sh: &'a mut Shared,
    /// False in `on_open` (the 101 has not been queued yet).
    can_send: bool,
}

impl Ctx<'_> {
    /// Adds `topic` to this connection's list; false if it was listed already.
    fn list_topic(&mut self, topic: &str) -> bool {
        let list = self.st.topics.get_or_insert_with(Default::default);
        if list.iter().any(|t| &**t == topic) {
            return false;
        }
        list.push(topic.into());
        true
    }

    fn queue(&mut self) -> &mut SendQueue {
        self.sh.touch(self.key, self.st);
        let pool = &mut self.sh.pool;
        self.st.send.get_or_insert_with(|| pool.take())
    }

    /// Bytes the protocol itself must send (101, pongs, closes, HTTP answers): never dropped.
    fn push_control(&mut self, bytes: &[u8]) {
        if self.st.has(flag::SEND_DEAD) {
            return;
        }
        self.queue().push_own(&[bytes]);
    }

    fn push_frame(&mut self, frame: &[u8]) {
        let opcode = frame.first().map(|b| b & 0x0f);
        if opcode == Some(OpCode::Close as u8) {
            self.st.set(flag::CLOSE_SENT);
        }
        if opcode == Some(OpCode::Pong as u8)
            && self.st.queued_bytes() + frame.len() > self.sh.send_queue_bytes_max
        {
            // A peer that pings and never reads must not grow our memory: past the send
            // queue limit its Pongs are dropped (§5.5.3 lets us answer only some Pings).
            add(&self.sh.metrics.backpressure_drops, 1);
            return;
        }
        self.push_control(frame);
    }

    /// Backpressure check for a data message of `len` bytes. `own`: sent by the handler
    /// through this connection (e.g. an echo from `on_message`), which reading less bounds
    /// (`budget.rs`), so only the other sources (broadcasts, publishes, sends from other
    /// connections) meet `send_queue_bytes_max`.
    fn admit(&mut self, len: usize, own: bool) -> bool {
        let blocked = flag::CLOSE_SENT | flag::OVERFLOW | flag::SEND_DEAD;
        if !self.can_send || self.st.has(blocked) || self.st.phase != Phase::Open {
            return false;
        }
        let queued = self.st.queued_bytes();
        let max = self.sh.send_queue_bytes_max;
        if queued + len > max && !own {
            self.overflow(queued);
            return false;
        }
        if queued + len > max / 2 {
            self.st.set(flag::WANT_DRAIN);
        }
        add(&self.sh.metrics.messages_sent, 1);
        true
    }

    fn overflow(&mut self, queued: usize) {
        let what = Backpressure::of(self.sh.policy);
        match what {
            Backpressure::Dropped => add(&self.sh.metrics.backpressure_drops, 1),
            Backpressure::Closing => {
                self.st.set(flag::OVERFLOW);
                add(&self.sh.metrics.backpressure_closes, 1);
                let reason: Box<str> = "send queue full".into();
                self.sh.deferred.push_back(Deferred::Close(
                    self.key,
                    close_code::POLICY_VIOLATION,
                    reason,
                ));
            }
        }
        self.st.set(flag::WANT_DRAIN);
        self.sh
            .deferred
            .push_back(Deferred::Backpressure(self.key, queued, what));
    }

    /// A frame encoded once for many connections. A small one is copied into this connection's
    /// queue (no atomic reference count per delivery, and a turn's frames merge into one run of
    /// registered bytes); a large one is queued by reference.
    fn push_shared(&mut self, frame: &Frame) -> bool {
        let frame = frame.for_window(self.st.deflate_bits);
        let compressed = frame.first().is_some_and(|b| (b >> 4) & frame::RSV1 != 0);
        if !self.admit(frame.len(), false) {
            return false;
        }
        if compressed {
            add(&self.sh.metrics.messages_deflated, 1);
        }
        if frame.len() <= SHARED_COPY_BYTES_MAX {
            self.queue().push_own(&[frame]);
        } else {
            self.queue().push_shared(frame.clone());
        }
        true
    }

    /// Compresses `payload` into the worker's scratch `out` for this connection (window `bits`)
    /// when it agreed to deflate and the message is long enough; true if that made it smaller.
    fn deflate_into(&mut self, payload: &[u8], out: &mut Vec<u8>) -> bool {
        let bits = self.st.deflate_bits;
        if bits == 0 || payload.len() < self.sh.deflate_bytes_min {
            return false;
        }
        out.clear();
        with_deflater(self.sh.deflate_level, bits, |d| {
            d.compress_message(payload, out)
        });
        out.len() < payload.len()
    }

    /// Queues one whole frame (`rsv`: `frame::RSV1` for a compressed payload) if backpressure
    /// admits it.
    fn push_message(&mut self, opcode: OpCode, rsv: u8, payload: &[u8]) -> bool {
        let mut hdr = [0u8; HEADER_BYTES_MAX];
        let n = frame::encode_header(&mut hdr, true, rsv, opcode, payload.len() as u64, None);
        if !self.admit(n + payload.len(), true) {
            return false;
        }
        self.queue().push_own(&[&hdr[..n], payload]);
        true
    }
}

impl ConnOps for Ctx<'_> {
    fn send(&mut self, kind: MessageKind, payload: &[u8]) -> bool {
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        if self.st.deflate_bits == 0 || payload.len() < self.sh.deflate_bytes_min {
            return self.push_message(opcode, 0, payload);
        }
        let mut out = std::mem::take(&mut self.sh.deflate_out);
        let queued = if self.deflate_into(payload, &mut out) {
            let queued = self.push_message(opcode, frame::RSV1, &out);
            if queued {
                add(&self.sh.metrics.messages_deflated, 1);
            }
            queued
        } else {
            self.push_message(opcode, 0, payload)
        };
        self.sh.deflate_out = out;
        queued
    }

    fn close(&mut self, code: u16, reason: &str) {
        self.sh
            .deferred
            .push_back(Deferred::Close(self.key, code, reason.into()));
    }

    fn subscribe(&mut self, topic: &str) {
        let before = self.sh.subscribed(topic);
        // Listed already: plainly subscribed (nothing to do), or positioned (made plain).
        if !self.list_topic(topic) && !remove_positioned(&mut self.sh.positioned, topic, self.key) {
            return;
        }
        self.sh
            .topics
            .entry(topic.into())
            .or_default()
            .push(self.key);
        self.sh.demand_change(topic, before);
    }

    fn subscribe_from(&mut self, topic: &str, from: Option<Position>) -> bool {
        let publisher = &self.sh.publisher;
        // On this node: the replay and the latest position, read at once. In the broker: a
        // request, answered by `Mail::Resumed`; until then live messages pass this subscriber
        // by (the replay will carry them). Without a position nothing needs the broker.
        let (last, now) = if let Some(h) = publisher.history() {
            let r = h.resume(topic, from);
            (r.last, Some((r.frames, r.gap)))
        } else if publisher.broker_history().is_some() {
            match from {
                None => (LAST_ANY, Some((Vec::new(), false))),
                // Too many waiting already: not checked, so a gap (and live from now).
                Some(_) if self.sh.resumes_pending >= self.sh.resumes_pending_max => {
                    (LAST_ANY, Some((Vec::new(), true)))
                }
                Some(_) => {
                    self.sh.resumes_pending += 1;
                    self.sh.resume_req += 1;
                    (
                        Position {
                            epoch: EPOCH_PENDING,
                            offset: self.sh.resume_req,
                        },
                        None,
                    )
                }
            }
        } else {
            return false;
        };
        let before = self.sh.subscribed(topic);
        if !self.list_topic(topic) {
            remove_subscriber(&mut self.sh.topics, topic, self.key);
            remove_positioned(&mut self.sh.positioned, topic, self.key);
        }
        self.sh
            .positioned
            .entry(topic.into())
            .or_default()
            .push((self.key, last));
        self.sh.demand_change(topic, before);
        let topic: Arc<str> = Arc::from(topic);
        match now {
            Some((frames, gap)) => {
                let answer = Resume {
                    replayed: frames.len(),
                    gap,
                };
                self.sh
                    .deferred
                    .push_back(Deferred::Resumed(self.key, topic, answer, frames, None));
            }
            None => {
                let hub = self.sh.publisher.broker_history().expect("checked above");
                hub.request_replay(crate::broker::ReplayRequest {
                    id: self.sh.id(self.key),
                    topic,
                    from: from.expect("a request has a position"),
                    req: last.offset,
                });
            }
        }
        true
    }

    fn unsubscribe(&mut self, topic: &str) {
        let Some(list) = self.st.topics.as_mut() else {
            return;
        };
        let Some(i) = list.iter().position(|t| &**t == topic) else {
            return;
        };
        list.swap_remove(i);
        if list.is_empty() {
            self.st.topics = None;
        }
        let before = self.sh.subscribed(topic);
        remove_subscriber(&mut self.sh.topics, topic, self.key);
        remove_positioned(&mut self.sh.positioned, topic, self.key);
        self.sh.demand_change(topic, before);
    }

    fn publish(&mut self, topic: &str, frame: Frame) {
        let worker = usize::from(self.sh.worker);
        self.sh
            .publisher
            .publish_frame(topic, frame.clone(), Some(worker));
        self.sh
            .deferred
            .push_back(Deferred::Publish(Arc::from(topic), frame, None));
    }

    fn broadcast(&mut self, frame: Frame) {
        let worker = usize::from(self.sh.worker);
        self.sh
            .publisher
            .broadcast_frame(frame.clone(), Some(worker));
        self.sh.deferred.push_back(Deferred::Broadcast(frame));
    }

    fn queued_bytes(&self) -> usize {
        self.st.queued_bytes()
    }

    fn publisher(&self) -> &Publisher {
        &self.sh.publisher
    }
}

/// Drops `key`'s positioned subscription to `topic`; false if it had none.
fn remove_positioned(
    positioned: &mut HashMap<Box<str>, Vec<(Key, Position)>>,
    topic: &str,
    key: Key,
) -> bool {
    let Some(subs) = positioned.get_mut(topic) else {
        return false;
    };
    let Some(i) = subs.iter().position(|(k, _)| *k == key) else {
        return false;
    };
    subs.swap_remove(i);
    if subs.is_empty() {
        positioned.remove(topic);
    }
    true
}

fn remove_subscriber(topics: &mut HashMap<Box<str>, Vec<Key>>, topic: &str, key: Key) {
    if let Some(subs) = topics.get_mut(topic) {
        if let Some(i) = subs.iter().position(|k| *k == key) {
            subs.swap_remove(i);
        }
        if subs.is_empty() {
            topics.remove(topic);
        }
    }
}

/// The sink for received bytes: messages go to the handler, protocol frames to the queue.
struct RecvSink<'a, H> {
    handler: &'a mut H,
    ctx: Ctx<'a>,
}

impl<H: Handler> Sink for RecvSink<'_, H> {
    fn message(&mut self, kind: MessageKind, payload: &[u8]) {
        add(&self.ctx.sh.metrics.messages_received, 1);
        let msg = match kind {
            MessageKind::Text => {
                debug_assert!(std::str::from_utf8(payload).is_ok());
                // SAFETY: `Connection::receive` validates text messages as UTF-8 before
                // delivering them (its `Sink::message` contract).
                Message::Text(unsafe { std::str::from_utf8_unchecked(payload) })
            }
            MessageKind::Binary => Message::Binary(payload),
        };
        let id = self.ctx.sh.id(self.ctx.key);
        self.handler
            .on_message(&mut Conn::new(id, &mut self.ctx), msg);
    }

    fn close(&mut self, code: u16, reason: &str) {
        self.ctx.st.close_code = code;
        self.ctx.st.close_reason = (!reason.is_empty()).then(|| reason.into());
    }

    fn send_frame(&mut self, frame: &[u8]) {
        self.ctx.push_frame(frame);
    }

    fn take_buffer(&mut self) -> Vec<u8> {
        self.ctx.sh.gather_pool.pop().unwrap_or_default()
    }

    fn give_buffer(&mut self, buf: Vec<u8>) {
        let pool = &mut self.ctx.sh.gather_pool;
        if pool.len() < GATHER_POOL_KEPT_MAX && buf.capacity() <= GATHER_KEPT_BYTES_MAX {
            pool.push(buf);
        }
    }

    fn take_inflater(&mut self) -> Box<Inflater> {
        add(&self.ctx.sh.metrics.messages_inflated, 1);
        self.ctx.sh.inflater.take().unwrap_or_default()
    }

    fn give_inflater(&mut self, inflater: Box<Inflater>) {
        self.ctx.sh.inflater = Some(inflater);
    }
}

/// The sink for frames the runtime asks for (heartbeat ping, our Close).
struct CtlSink<'a>(Ctx<'a>);

impl Sink for CtlSink<'_> {
    fn message(&mut self, _kind: MessageKind, _payload: &[u8]) {}

    fn send_frame(&mut self, frame: &[u8]) {
        self.0.push_frame(frame);
    }
}

/// Multishot accept state.
#[derive(Default)]
struct AcceptState {
    armed: bool,
    /// The armed accept is multishot (it may take a whole backlog burst at once).
    multishot: bool,
    /// A cancel of the multishot accept was sent (the table is nearly full).
    cancelling: bool,
    /// Fixed-file slots in use on this worker.
    fixed_in_use: u32,
    /// The fixed-file table was full: re-arm once a descriptor is closed.
    paused: bool,
    /// After an unexpected error, re-arm no sooner than this (never spin).
    retry_at_ms: u64,
}

/// Back-off after an unexpected accept error.
const ACCEPT_RETRY_MS: u64 = 100;

/// Everything but the ring and the receive buffers.
struct Engine<H> {
    cfg: Arc<Config>,
    limits: Limits,
    deflate_policy: deflate::DeflatePolicy,
    listener: OwnedFd,
    handler: H,
    slots: Slots,
    wheel: TimerWheel,
    sh: Shared,
    now_ms: u64,
    accept: AcceptState,
    handshaking: u32,
    stop_at_ms: Option<u64>,
    forced_all: bool,
    keys: Vec<Key>,
    dirty: Vec<Key>,
    fired: Vec<(crate::timer::TimerId, u64)>,
    mask_seed: u64,
    /// `wss://`: every accepted connection gets a TLS state from here.
    tls: Option<WorkerTls>,
}

fn token(key: Key) -> u64 {
    u64::from(key.generation) << 32 | u64::from(key.index)
}

fn key_of(token: u64) -> Key {
    Key {
        index: token as u32,
        generation: (token >> 32) as u32,
    }
}

impl<H: Handler> Engine<H> {
    fn ctx(&mut self, key: Key, can_send: bool) -> Option<(Ctx<'_>, &mut Connection, &mut H)> {
        let Slot { core, st } = self.slots.get(key)?;
        Some((
            Ctx {
                key,
                st,
                sh: &mut self.sh,
                can_send,
            },
            core,
            &mut self.handler,
        ))
    }

    // ----- phases and gauges ---------------------------------------------------------------

    fn gauge(&self, phase: Phase) -> Option<&std::sync::atomic::AtomicU64> {
        let m = &self.sh.metrics;
        match phase {
            Phase::Handshaking => Some(&m.handshaking),
            Phase::Open => Some(&m.open),
            Phase::Closing => Some(&m.closing),
            Phase::Closed => None,
        }
    }

    fn move_to(&mut self, key: Key, to: Phase) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let from = slot.st.phase;
        slot.st.set_phase(to);
        if from == Phase::Handshaking {
            self.handshaking -= 1;
        }
        if let Some(g) = self.gauge(from) {
            dec(g);
        }
        if let Some(g) = self.gauge(to) {
            add(g, 1);
        }
    }

    // ----- timers --------------------------------------------------------------------------

    fn arm(&mut self, key: Key, kind: TimerKind, deadline_ms: u64) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        if let Some(id) = slot.st.timer.take() {
            self.wheel.cancel(id);
        }
        slot.st.timer_kind = kind;
        match self.wheel.insert(deadline_ms, token(key)) {
            Ok(id) => slot.st.timer = Some(id),
            // Capacity equals the fixed-file table, so this cannot happen; end it safely.
            Err(_) => self.force_close(key),
        }
    }

    fn disarm(&mut self, key: Key) {
        if let Some(id) = self.slots.get(key).and_then(|s| s.st.timer.take()) {
            self.wheel.cancel(id);
        }
    }

    fn fire_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.wheel
            .advance(self.now_ms, &mut |id, t| fired.push((id, t)));
        for &(id, t) in &fired {
            let key = key_of(t);
            let Some(slot) = self.slots.get(key) else {
                continue;
            };
            if slot.st.timer != Some(id) {
                continue;
            }
            slot.st.timer = None;
            self.on_timer(key);
        }
        self.fired = fired;
    }

    fn on_timer(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let (phase, kind) = (slot.st.phase, slot.st.timer_kind);
        let (idle_since, awaiting) = (slot.st.last_recv_ms, slot.st.has(flag::AWAIT_PONG));
        match (phase, kind) {
            (Phase::Open, TimerKind::Idle) => self.on_idle(key, idle_since),
            // Something arrived after the ping: back to idle watching.
            (Phase::Open, TimerKind::Pong) if !awaiting => {
                let due = idle_since + self.ping_after_ms(key);
                self.arm(key, TimerKind::Idle, due)
            }
            // Handshake deadline, silent peer after a ping, unanswered Close, stuck TCP end.
            _ => {
                let tls_unfinished = slot.st.tls.as_ref().is_some_and(|t| !t.handshake_done());
                if phase == Phase::Handshaking && tls_unfinished {
                    add(&self.sh.metrics.tls_handshake_timeouts, 1);
                }
                self.force_close(key)
            }
        }
    }

    /// Idle time before a heartbeat ping: `ping_interval_ms` plus a fixed per-slot spread of up
    /// to an eighth of it, so that connections opened together do not all fall due in the same
    /// tick (at a million connections that wave stalled a core, docs/TUNING.md).
    fn ping_after_ms(&self, key: Key) -> u64 {
        let interval = self.cfg.ping_interval_ms;
        let spread = interval / 8;
        let hash = u64::from(key.index).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        interval + if spread == 0 { 0 } else { hash % spread }
    }

    fn on_idle(&mut self, key: Key, idle_since: u64) {
        let due = idle_since + self.ping_after_ms(key);
        if due > self.now_ms {
            return self.arm(key, TimerKind::Idle, due);
        }
        let Some((ctx, core, _)) = self.ctx(key, true) else {
            return;
        };
        ctx.st.set(flag::AWAIT_PONG);
        core.ping(b"", &mut CtlSink(ctx));
        self.arm(key, TimerKind::Pong, self.now_ms + self.cfg.pong_timeout_ms);
    }

    // ----- accept --------------------------------------------------------------------------

    fn on_accept(&mut self, result: Accepted, more: bool) {
        if !more {
            self.accept.armed = false;
            self.accept.cancelling = false;
        }
        match result {
            Accepted::Socket(fd) => self.on_socket(fd),
            Accepted::TableFull => self.accept.paused = true,
            Accepted::Canceled | Accepted::Transient => {}
            Accepted::Failed(e) => {
                eprintln!("ringws worker {}: accept: {e}", self.sh.worker);
                self.accept.retry_at_ms = self.now_ms + ACCEPT_RETRY_MS;
            }
        }
    }

    fn on_socket(&mut self, fd: u32) {
        self.accept.fixed_in_use += 1;
        add(&self.sh.metrics.fixed_files, 1);
        add(&self.sh.metrics.slab_slots, 1);
        add(&self.sh.metrics.handshaking, 1);
        self.handshaking += 1;
        let core = Connection::new(Role::Server, self.limits, self.next_seed());
        let key = self.slots.insert(fd, core, self.now_ms);
        let tls = self.tls.as_mut().map(|t| t.accept());
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        let tls_broken = matches!(tls, Some(Err(_)));
        st.tls = tls.and_then(Result::ok);
        self.sh.submit(st, Op::NoDelay { key, fd });
        self.sh.submit(
            st,
            Op::Recv {
                key,
                fd,
                group: RECV_GROUP,
            },
        );
        st.set(flag::RECV_ARMED);
        let over_limit = self.slots.len() > self.cfg.connections_per_worker_max as usize
            || self.handshaking > self.cfg.handshakes_pending_per_worker_max;
        if self.stop_at_ms.is_some() || tls_broken {
            self.force_close(key);
        } else if over_limit && self.tls.is_some() {
            // No 503 can be written before a TLS handshake: the connection is closed unanswered.
            add(&self.sh.metrics.tls_refused, 1);
            self.end_tcp(key);
        } else if over_limit {
            self.http_answer(key, 503, b"server busy, try again later");
        } else {
            self.arm(
                key,
                TimerKind::Handshake,
                self.now_ms + self.cfg.handshake_timeout_ms,
            );
        }
    }

    fn next_seed(&mut self) -> u64 {
        // xorshift: the server role never masks, the seed only has to differ.
        self.mask_seed ^= self.mask_seed << 13;
        self.mask_seed ^= self.mask_seed >> 7;
        self.mask_seed ^= self.mask_seed << 17;
        self.mask_seed
    }

    // ----- receive -------------------------------------------------------------------------

    /// Bytes arrived in a provided buffer; parsed in place, given back by the caller after.
    fn on_data(&mut self, key: Key, buf: &mut [u8]) {
        add(&self.sh.metrics.bytes_received, buf.len() as u64);
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        slot.st.last_recv_ms = self.now_ms;
        slot.st.clear(flag::AWAIT_PONG);
        if slot.st.tls.is_some() {
            return self.on_tls_bytes(key, buf);
        }
        self.on_plain_bytes(key, buf);
    }

    /// Bytes of the WebSocket layer (a plain receive buffer, or decrypted TLS records).
    fn on_plain_bytes(&mut self, key: Key, buf: &mut [u8]) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        match slot.st.phase {
            Phase::Handshaking => self.on_handshake_bytes(key, buf),
            Phase::Open => self.on_frame_bytes(key, buf),
            // Lingering after our side ended: input is read and discarded until EOF.
            Phase::Closing | Phase::Closed => {}
        }
    }

    /// TLS records: decrypted (see `tls.rs`), their plaintext parsed as a receive buffer.
    fn on_tls_bytes(&mut self, key: Key, buf: &mut [u8]) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let Some(tls) = slot.st.tls.as_mut() else {
            return;
        };
        let mut plain = std::mem::take(&mut self.sh.tls_plain);
        plain.clear();
        let res = tls.receive(buf, &mut plain);
        let done = tls.take_handshake_done();
        let peer_closed = tls.peer_closed();
        if tls.has_pending() {
            let pool = &mut self.sh.pool;
            slot.st.send.get_or_insert_with(|| pool.take());
            self.sh.touch(key, &mut slot.st);
        }
        let m = &self.sh.metrics;
        if let Some(resumed) = done {
            add(&m.tls_handshakes, 1);
            if resumed {
                add(&m.tls_resumed, 1);
            }
        }
        match res {
            Ok(()) => {
                if !plain.is_empty() {
                    self.on_plain_bytes(key, &mut plain);
                }
                if peer_closed {
                    add(&self.sh.metrics.tls_close_notify_received, 1);
                    self.on_close_notify(key);
                }
            }
            Err(f) => {
                match f {
                    TlsFailure::PlaintextHttp => add(&m.tls_plaintext_http, 1),
                    TlsFailure::Protocol(_) | TlsFailure::SpillFull => add(&m.tls_errors, 1),
                }
                self.end_tcp(key);
            }
        }
        if plain.capacity() > GATHER_KEPT_BYTES_MAX {
            plain = Vec::new();
        }
        self.sh.tls_plain = plain;
    }

    /// The peer's close_notify: its input is over (the WebSocket ends as on a TCP end); ours
    /// goes out before our TCP write side is shut.
    fn on_close_notify(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        if matches!(slot.st.phase, Phase::Handshaking | Phase::Open) {
            slot.core.transport_closed();
            self.end_tcp(key);
        }
    }

    /// The hang-up poll of a paused connection ended: a reset ends the connection as a broken
    /// receive would; a FIN lifts the pause, so that the rest of the peer's input is read to
    /// its end.
    fn on_hangup(&mut self, key: Key, seen: Hangup) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        st.ops -= 1;
        st.clear(flag::WATCH_HUP | flag::WATCH_CANCEL);
        self.sh.touch(key, st);
        match seen {
            Hangup::Canceled => {}
            Hangup::Fin => st.set(flag::PEER_FIN),
            Hangup::Reset => {
                st.set(flag::PEER_DONE | flag::SEND_DEAD);
                self.after_input_end(key);
            }
        }
    }

    fn on_recv_end(&mut self, key: Key, result: Received, more: bool) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        match result {
            Received::Data { .. } => {}
            Received::Eof => st.set(flag::PEER_DONE),
            // Only a pause cancels a receive (budget.rs): input is not over.
            Received::Canceled => {}
            Received::Reset => st.set(flag::PEER_DONE | flag::SEND_DEAD),
            Received::NoBuffers => {}
        }
        if !more {
            st.ops -= 1;
            st.clear(flag::RECV_ARMED);
            if !st.has(flag::PEER_DONE | flag::RECV_PAUSED) && st.phase != Phase::Closed {
                st.set(flag::RECV_REARM);
            }
        }
        self.sh.touch(key, st);
        self.after_input_end(key);
    }

    /// What a broken socket (`SEND_DEAD`) or the end of the peer's input (`PEER_DONE`), as a
    /// receive or the hang-up poll saw it, means: queued bytes are dropped, and an open
    /// connection's TCP is ended.
    fn after_input_end(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        if st.has(flag::SEND_DEAD)
            && let Some(q) = st.send.as_mut()
        {
            q.discard_queued();
        }
        if st.has(flag::PEER_DONE) && matches!(st.phase, Phase::Handshaking | Phase::Open) {
            slot.core.transport_closed();
            self.end_tcp(key);
        }
    }

    fn on_frame_bytes(&mut self, key: Key, buf: &mut [u8]) {
        let Some((ctx, core, handler)) = self.ctx(key, true) else {
            return;
        };
        let mut sink = RecvSink { handler, ctx };
        if let Err(e) = core.receive(buf, &mut sink) {
            let st = &mut sink.ctx.st;
            if st.close_code == close_code::ABNORMAL {
                st.close_code = e.close_code();
                st.close_reason = Some(e.reason().into());
            }
        }
        self.after_core(key);
    }

    /// Follows the protocol core's state: Closing arms the close timer, Closed ends TCP.
    fn after_core(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        if slot.st.phase != Phase::Open {
            return;
        }
        match slot.core.state() {
            State::Open => {}
            State::Closing if slot.st.timer_kind != TimerKind::Close => self.arm(
                key,
                TimerKind::Close,
                self.now_ms + self.cfg.close_timeout_ms,
            ),
            State::Closing => {}
            State::Closed => self.end_tcp(key),
        }
    }

    // ----- handshake -----------------------------------------------------------------------

    fn on_handshake_bytes(&mut self, key: Key, buf: &mut [u8]) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        match slot.st.spill.take() {
            None => {
                if !self.try_upgrade(key, buf)
                    && let Some(slot) = self.slots.get(key)
                {
                    slot.st.spill = Some(Box::new(buf.to_vec()));
                }
            }
            Some(mut spill) => {
                spill.extend_from_slice(buf);
                // The head ends with a '\n': without one in the new bytes (and within the size
                // limit) the answer would be Incomplete again, so a peer that trickles bytes
                // does not make us rescan the whole spill per read.
                let undecided =
                    !buf.contains(&b'\n') && spill.len() <= self.cfg.handshake_header_bytes_max;
                if (undecided || !self.try_upgrade(key, &mut spill[..]))
                    && let Some(slot) = self.slots.get(key)
                {
                    slot.st.spill = Some(spill);
                }
            }
        }
    }

    /// Parses the request in `data`; false if it is incomplete (keep the bytes).
    fn try_upgrade(&mut self, key: Key, data: &mut [u8]) -> bool {
        let header_len = match handshake::parse_request(data, self.cfg.handshake_header_bytes_max) {
            Ok(Parsed::Incomplete) => return false,
            Err(reject) => {
                self.http_answer(key, reject.status(), reject.message().as_bytes());
                return true;
            }
            Ok(Parsed::Plain(p)) => {
                self.plain_request(key, p.method, p.path);
                return true;
            }
            Ok(Parsed::Complete(req)) => {
                if !self.upgrade(key, &req) {
                    return true;
                }
                req.header_len
            }
        };
        let rest = &mut data[header_len..];
        if !rest.is_empty() {
            self.on_frame_bytes(key, rest);
        }
        true
    }

    fn origin_allowed(&self, req: &Request<'_>) -> bool {
        let allowed = &self.cfg.origins_allowed;
        allowed.is_empty()
            || req
                .origin
                .is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
    }

    /// Asks the handler, then queues the 101. False if the request was refused.
    fn upgrade(&mut self, key: Key, req: &Request<'_>) -> bool {
        if !self.origin_allowed(req) {
            self.http_answer(key, 403, b"origin not allowed");
            return false;
        }
        let agreed = match deflate::negotiate(
            req.header_all("sec-websocket-extensions"),
            &self.deflate_policy,
        ) {
            Ok(agreed) => agreed,
            Err(reject) => {
                self.http_answer(key, reject.status(), reject.message().as_bytes());
                return false;
            }
        };
        let Some((mut ctx, core, handler)) = self.ctx(key, false) else {
            return false;
        };
        let id = ctx.sh.id(key);
        let decision = handler.on_open(&mut Conn::new(id, &mut ctx), req);
        let protocol = match decision {
            OpenDecision::Accept { protocol } => protocol,
            OpenDecision::Reject(status) => {
                self.http_answer(key, status, b"refused by the application");
                return false;
            }
        };
        let mut ext = [0u8; 128];
        let ext = agreed.map(|a| {
            let n = a.write_response(&mut ext);
            // The writer only writes ASCII.
            std::str::from_utf8(&ext[..n]).unwrap_or_default()
        });
        let mut out = [0u8; 1024];
        let Some(n) = handshake::write_accept(&mut out, req.key, protocol, ext) else {
            self.http_answer(key, 500, b"subprotocol name too long");
            return false;
        };
        if let Some(a) = agreed {
            core.set_deflate(Some(connection::Deflate {
                peer_context_takeover: a.client_context_takeover,
                send_window_bits: a.server_window_bits,
            }));
            ctx.st.deflate_bits = a.server_window_bits;
            ctx.sh.count_deflate(a.server_window_bits, true);
        }
        ctx.push_control(&out[..n]);
        ctx.st.set(flag::OPENED);
        self.move_to(key, Phase::Open);
        let due = self.now_ms + self.ping_after_ms(key);
        self.arm(key, TimerKind::Idle, due);
        true
    }

    /// A request without Upgrade: `/metrics`, or a clear refusal.
    fn plain_request(&mut self, key: Key, method: &str, path: &str) {
        match (method, path) {
            ("GET", "/metrics") => {
                let body = self.sh.all_metrics.render();
                let mut out = vec![0u8; body.len() + 256];
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                let n = handshake::write_response(&mut out, 200, ct, body.as_bytes());
                self.answer_bytes(key, 200, &out[..n.unwrap_or(0)]);
            }
            (_, "/metrics") => self.http_answer(key, 405, b"use GET /metrics"),
            _ => self.http_answer(key, 426, b"this is a WebSocket endpoint (and GET /metrics)"),
        }
    }

    /// Queues an HTTP answer and ends the connection after it.
    fn http_answer(&mut self, key: Key, status: u16, body: &[u8]) {
        let mut out = [0u8; 1024];
        let body = std::str::from_utf8(body).unwrap_or("");
        let n = handshake::write_reject(&mut out, status, body).unwrap_or(0);
        self.answer_bytes(key, status, &out[..n]);
    }

    fn answer_bytes(&mut self, key: Key, status: u16, bytes: &[u8]) {
        self.sh.metrics.http(status);
        if let Some((mut ctx, _, _)) = self.ctx(key, false) {
            ctx.push_control(bytes);
        }
        self.end_tcp(key);
    }

    // ----- closing -------------------------------------------------------------------------

    /// Reports the close to the handler, once.
    fn report(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        if !st.has(flag::OPENED) || st.has(flag::REPORTED) {
            return;
        }
        st.set(flag::REPORTED);
        if st.deflate_bits != 0 {
            self.sh.count_deflate(st.deflate_bits, false);
            st.deflate_bits = 0;
        }
        let code = st.close_code;
        let reason = st.close_reason.take();
        self.sh.metrics.close(code);
        let id = self.sh.id(key);
        self.handler
            .on_close(id, code, reason.as_deref().unwrap_or(""));
    }

    /// The WebSocket is over (or never was): end TCP, server first — flush, shutdown(SHUT_WR),
    /// read until EOF, close — within the close timeout.
    fn end_tcp(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        if !matches!(slot.st.phase, Phase::Handshaking | Phase::Open) {
            return;
        }
        slot.core.transport_closed();
        self.move_to(key, Phase::Closing);
        self.report(key);
        self.arm(
            key,
            TimerKind::Close,
            self.now_ms + self.cfg.close_timeout_ms,
        );
        if let Some(slot) = self.slots.get(key) {
            self.sh.touch(key, &mut slot.st);
        }
    }

    /// Ends TCP now: shutdown(SHUT_RDWR) wakes any pending receive or send, then Close.
    fn force_close(&mut self, key: Key) {
        self.end_tcp(key);
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        if st.phase == Phase::Closed || st.has(flag::FORCED) {
            return;
        }
        st.set(flag::FORCED | flag::SEND_DEAD);
        if let Some(q) = st.send.as_mut() {
            q.discard_queued();
        }
        let fd = st.fd;
        self.sh.submit(
            st,
            Op::Shutdown {
                key,
                fd,
                how: libc::SHUT_RDWR,
            },
        );
    }

    /// Moves a Closing connection along once its sends are done.
    fn drive_close(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        if st.phase != Phase::Closing || st.has(flag::FORCED) {
            return;
        }
        let flushing = st.send.as_ref().is_some_and(|q| !q.is_empty());
        if flushing && !st.has(flag::SEND_DEAD) {
            return;
        }
        if st.has(flag::SEND_DEAD) && st.has(flag::PEER_DONE) && !st.has(flag::SHUT_SENT) {
            return self.submit_close(key);
        }
        if !st.has(flag::SHUT_SENT)
            && !st.has(flag::SEND_DEAD)
            && let Some(t) = st.tls.as_mut()
            && t.queue_close_notify()
        {
            // TLS ends with our close_notify, then the TCP write side.
            let pool = &mut self.sh.pool;
            st.send.get_or_insert_with(|| pool.take());
            self.sh.touch(key, st);
            return;
        }
        if !st.has(flag::SHUT_SENT) {
            st.set(flag::SHUT_SENT);
            let fd = st.fd;
            self.sh.submit(
                st,
                Op::Shutdown {
                    key,
                    fd,
                    how: libc::SHUT_WR,
                },
            );
            return;
        }
        if st.has(flag::SHUT_DONE) && st.has(flag::PEER_DONE) {
            self.submit_close(key);
        }
    }

    fn submit_close(&mut self, key: Key) {
        self.disarm(key);
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        if slot.st.phase == Phase::Closed {
            return;
        }
        let fd = slot.st.fd;
        self.sh.submit(&mut slot.st, Op::Close { key, fd });
        self.move_to(key, Phase::Closed);
    }

    fn on_shutdown_done(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        slot.st.ops -= 1;
        slot.st.set(flag::SHUT_DONE);
        if slot.st.has(flag::FORCED) {
            self.submit_close(key);
        } else {
            self.sh.touch(key, &mut slot.st);
        }
    }

    fn on_close_done(&mut self, key: Key) {
        dec(&self.sh.metrics.fixed_files);
        self.accept.fixed_in_use -= 1;
        self.accept.paused = false;
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        slot.st.ops -= 1;
        self.sh.touch(key, &mut slot.st);
    }

    fn free(&mut self, key: Key) {
        let mut slot = self.slots.remove(key);
        self.sh.mem.forget(&mut slot.st);
        dec(&self.sh.metrics.slab_slots);
        for topic in slot
            .st
            .topics
            .take()
            .into_iter()
            .flat_map(|b| b.into_iter())
        {
            let before = self.sh.subscribed(&topic);
            remove_subscriber(&mut self.sh.topics, &topic, key);
            remove_positioned(&mut self.sh.positioned, &topic, key);
            self.sh.demand_change(&topic, before);
        }
        if let Some(q) = slot.st.send.take() {
            self.sh.pool.give_back(discarded(q));
        }
    }

    // ----- sending -------------------------------------------------------------------------

    fn on_sent(&mut self, key: Key, result: Sent) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        st.ops -= 1;
        self.sh.touch(key, st);
        let (dead, fd) = (st.has(flag::SEND_DEAD), st.fd);
        let q = st
            .send
            .as_mut()
            .expect("a send completed without a send queue");
        match result {
            Sent::Bytes(n) => {
                add(&self.sh.metrics.bytes_sent, u64::from(n));
                match q.complete(n as usize) {
                    Some(op) if !dead => {
                        let op = send_op(key, fd, op, q, self.sh.zc_bytes_min);
                        self.sh.submit(st, op);
                    }
                    Some(_) => q.abort(),
                    None => {}
                }
            }
            Sent::PeerGone => {
                q.abort();
                st.set(flag::SEND_DEAD);
                if st.phase == Phase::Open || st.phase == Phase::Handshaking {
                    self.end_tcp(key);
                }
            }
        }
    }

    /// A zero-copy send completion: the result is kept until the notification says the kernel
    /// is done with the buffers; only then is the send finished.
    fn on_sent_zc(&mut self, key: Key, result: Option<Sent>, more: bool) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let q = slot
            .st
            .send
            .as_mut()
            .expect("a send completed without a send queue");
        let result = match result {
            Some(r) if more => {
                q.zc_result = Some(match r {
                    Sent::Bytes(n) => n,
                    Sent::PeerGone => u32::MAX,
                });
                return;
            }
            Some(r) => r,
            None => match q.zc_result.take() {
                Some(u32::MAX) | None => Sent::PeerGone,
                Some(n) => Sent::Bytes(n),
            },
        };
        self.on_sent(key, result);
    }

    /// End-of-turn work for one touched slot.
    fn settle(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        st.clear(flag::DIRTY);
        let held = slot.core.heap_bytes() + st.spill.as_ref().map_or(0, |v| v.capacity());
        if let Some(cancel) = self.sh.mem.pace(key, st, held) {
            self.sh.ops.push(cancel);
        }
        if st.has(flag::RECV_REARM) && st.phase != Phase::Closed && !st.has(flag::PEER_DONE) {
            st.clear(flag::RECV_REARM);
            st.set(flag::RECV_ARMED);
            let fd = st.fd;
            self.sh.submit(
                st,
                Op::Recv {
                    key,
                    fd,
                    group: RECV_GROUP,
                },
            );
        }
        self.start_send(key);
        self.drive_close(key);
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        watch_hangup(&mut self.sh, key, &mut slot.st);
        if slot.st.phase == Phase::Closed && slot.st.ops == 0 {
            self.free(key);
        }
    }

    fn start_send(&mut self, key: Key) {
        let Some(slot) = self.slots.get(key) else {
            return;
        };
        let st = &mut slot.st;
        let (dead, fd) = (st.has(flag::SEND_DEAD), st.fd);
        let Some(q) = st.send.as_mut() else { return };
        let next = match st.tls.as_mut() {
            _ if dead => None,
            Some(t) => start_sealed(q, t),
            None => q.start(),
        };
        if dead {
            q.discard_queued();
        } else if let Some(op) = next {
            add(&self.sh.metrics.sends, 1);
            let op = send_op(key, fd, op, q, self.sh.zc_bytes_min);
            if matches!(op, Op::SendFixed { .. }) {
                add(&self.sh.metrics.sends_fixed, 1);
            }
            self.sh.submit(st, op);
            return;
        }
        if !q.is_empty() {
            return;
        }
        let q = st.send.take().expect("checked above");
        self.sh.pool.give_back(q);
        if st.has(flag::WANT_DRAIN) && !st.has(flag::OVERFLOW) && st.phase == Phase::Open {
            st.clear(flag::WANT_DRAIN);
            let Some((mut ctx, _, handler)) = self.ctx(key, true) else {
                return;
            };
            let id = ctx.sh.id(key);
            handler.on_drain(&mut Conn::new(id, &mut ctx));
        }
    }

    /// A shared frame for one connection (fanout, or a Publisher send).
    fn deliver(&mut self, key: Key, frame: &Frame) {
        if let Some((mut ctx, _, _)) = self.ctx(key, true) {
            ctx.push_shared(frame);
        }
    }

    // ----- deferred work and mail ----------------------------------------------------------

    fn run_deferred(&mut self, d: Deferred) {
        match d {
            Deferred::Close(key, code, reason) => self.close_ws(key, code, &reason),
            Deferred::Publish(topic, frame, seq) => {
                let mut keys = std::mem::take(&mut self.keys);
                keys.clear();
                if let Some(subs) = self.sh.topics.get(&*topic) {
                    keys.extend_from_slice(subs);
                }
                for &k in &keys {
                    self.deliver(k, &frame);
                }
                if let Some(seq) = seq {
                    keys.clear();
                    positioned_due(&mut self.sh.positioned, &topic, seq.position, &mut keys);
                    for &k in &keys {
                        self.deliver(k, &seq.frame);
                    }
                }
                self.keys = keys;
            }
            Deferred::Resumed(key, topic, resume, frames, from_broker) => {
                if let Some((req, last)) = from_broker {
                    let pending = Position {
                        epoch: EPOCH_PENDING,
                        offset: req,
                    };
                    // Still waiting for this answer (not unsubscribed, closed or subscribed
                    // again since).
                    let Some(entry) =
                        self.sh.positioned.get_mut(&*topic).and_then(|subs| {
                            subs.iter_mut().find(|(k, p)| *k == key && *p == pending)
                        })
                    else {
                        return;
                    };
                    entry.1 = last;
                }
                if let Some((mut ctx, _, handler)) = self.ctx(key, true)
                    && ctx.st.phase == Phase::Open
                {
                    let id = ctx.sh.id(key);
                    handler.on_resume(&mut Conn::new(id, &mut ctx), &topic, resume);
                }
                for f in &frames {
                    self.deliver(key, f);
                }
            }
            Deferred::Broadcast(frame) => {
                let mut keys = std::mem::take(&mut self.keys);
                self.slots.keys(&mut keys);
                for &k in &keys {
                    self.deliver(k, &frame);
                }
                self.keys = keys;
            }
            Deferred::Backpressure(key, queued, what) => {
                let id = self.sh.id(key);
                self.handler.on_backpressure(id, queued, what);
            }
        }
    }

    /// Starts our close handshake (handler close, backpressure, shutdown).
    fn close_ws(&mut self, key: Key, code: u16, reason: &str) {
        let Some((ctx, core, _)) = self.ctx(key, true) else {
            return;
        };
        if ctx.st.phase != Phase::Open || core.state() != State::Open {
            return;
        }
        ctx.st.close_code = code;
        ctx.st.close_reason = (!reason.is_empty()).then(|| reason.into());
        core.close(code, reason, &mut CtlSink(ctx));
        self.after_core(key);
    }

    fn on_mail(&mut self, mail: Mail) {
        match mail {
            Mail::Send(id, frame) => {
                if id.worker() == usize::from(self.sh.worker) {
                    self.deliver(
                        Key {
                            index: id.index(),
                            generation: id.generation(),
                        },
                        &frame,
                    );
                }
            }
            Mail::Publish(topic, frame, seq) => self
                .sh
                .deferred
                .push_back(Deferred::Publish(topic, frame, seq)),
            Mail::Broadcast(frame) => self.sh.deferred.push_back(Deferred::Broadcast(frame)),
            Mail::Resumed {
                id,
                topic,
                req,
                frames,
                last,
                gap,
            } => {
                self.sh.resumes_pending -= 1;
                let key = Key {
                    index: id.index(),
                    generation: id.generation(),
                };
                let resume = Resume {
                    replayed: frames.len(),
                    gap,
                };
                let at = last.unwrap_or(LAST_ANY);
                self.sh.deferred.push_back(Deferred::Resumed(
                    key,
                    topic,
                    resume,
                    frames,
                    Some((req, at)),
                ));
            }
            Mail::Shutdown => self.begin_stop(),
        }
    }

    /// Graceful shutdown: stop accepting, Close 1001 to every connection, and leave once all
    /// are gone or the close timeout has passed.
    fn begin_stop(&mut self) {
        if self.stop_at_ms.is_some() {
            return;
        }
        self.stop_at_ms = Some(self.now_ms + self.cfg.close_timeout_ms);
        if self.accept.armed {
            self.sh.ops.push(Op::CancelAccept);
        }
        let mut keys = std::mem::take(&mut self.keys);
        self.slots.keys(&mut keys);
        for &k in &keys {
            match self.slots.get(k).map(|s| s.st.phase) {
                Some(Phase::Handshaking) => self.force_close(k),
                Some(Phase::Open) => {
                    self.close_ws(k, close_code::GOING_AWAY, "server shutting down")
                }
                _ => {}
            }
        }
        self.keys = keys;
    }

    /// Whether the worker may leave its loop.
    fn finished(&mut self) -> bool {
        let Some(stop_at) = self.stop_at_ms else {
            return false;
        };
        if self.slots.is_empty() && !self.accept.armed {
            return true;
        }
        if self.now_ms >= stop_at && !self.forced_all {
            self.forced_all = true;
            let mut keys = std::mem::take(&mut self.keys);
            self.slots.keys(&mut keys);
            for &k in &keys {
                self.force_close(k);
            }
            self.keys = keys;
        }
        self.now_ms >= stop_at + STOP_GRACE_MS
    }

    /// Runs deferred work and settles touched slots until nothing is left.
    fn flush(&mut self) {
        loop {
            while let Some(d) = self.sh.deferred.pop_front() {
                self.run_deferred(d);
            }
            if self.sh.dirty.is_empty() {
                break;
            }
            let mut dirty = std::mem::take(&mut self.dirty);
            std::mem::swap(&mut dirty, &mut self.sh.dirty);
            for &k in &dirty {
                self.settle(k);
            }
            dirty.clear();
            self.dirty = dirty;
        }
        self.arm_accept();
        self.budget_turn();
    }

    /// Once per turn: the memory budget (`budget.rs`) may release paused connections or shed the
    /// largest (the slots it touches are settled next turn).
    fn budget_turn(&mut self) {
        let sh = &mut self.sh;
        let pools = sh.gather_pool.iter().map(Vec::capacity).sum::<usize>()
            + sh.deflate_out.capacity()
            + sh.inflater
                .as_ref()
                .map_or(0, |_| connection::INFLATER_HEAP_BYTES);
        sh.mem.pools(pools);
        match sh.mem.turn(self.now_ms) {
            Turn::Calm => {}
            Turn::Release(keys) => {
                for key in keys {
                    if let Some(slot) = self.slots.get(key) {
                        slot.st.clear(flag::BUDGET_HOLD);
                        self.sh.touch(key, &mut slot.st);
                    }
                }
            }
            Turn::Shed(bytes) => self.shed(bytes, false),
            Turn::ShedHeld(bytes) => self.shed(bytes, true),
        }
        if self.sh.mem.trim_due(self.now_ms) {
            self.give_back_memory();
        }
    }

    /// After a burst: the pools kept for reuse are emptied and the allocator gives its free
    /// memory back to the kernel (`budget.rs`, memory that returns).
    fn give_back_memory(&mut self) {
        let sh = &mut self.sh;
        sh.gather_pool = Vec::new();
        sh.deflate_out = Vec::new();
        sh.pool.trim();
        sys::release_free_memory();
    }

    /// Closes the open connections that hold the most, largest first, until `bytes` are freed
    /// (never one that holds at most a receive buffer: a client that reads its answers is not
    /// what exceeds the budget):
    /// their queued output is dropped and Close 1013 queued, with the grace to leave; one with a
    /// send in flight (a peer that does not read) is ended at once, so that its batch is freed
    /// too.
    fn shed(&mut self, bytes: u64, only_held: bool) {
        let mut keys = std::mem::take(&mut self.keys);
        self.slots.keys(&mut keys);
        let mut big: Vec<(u64, Key)> = keys
            .iter()
            .filter_map(|&k| {
                let Slot { core, st } = self.slots.get(k)?;
                let n = u64::from(st.held_bytes).max(st.queued_bytes() as u64);
                let open = st.phase == Phase::Open && core.state() == State::Open;
                let chosen = !only_held || st.has(flag::BUDGET_HOLD);
                (open && chosen && self.sh.mem.holds_much(n)).then_some((n, k))
            })
            .collect();
        self.keys = keys;
        big.sort_unstable_by_key(|&(n, _)| std::cmp::Reverse(n));
        let mut freed = 0;
        for (n, key) in big {
            if freed >= bytes {
                break;
            }
            freed += n;
            self.sh.mem.shed_one();
            let Some(slot) = self.slots.get(key) else {
                continue;
            };
            let in_flight = slot.st.send.as_mut().is_some_and(|q| {
                q.discard_queued();
                q.in_flight()
            });
            let reason = "memory budget exceeded";
            self.close_ws(key, close_code::TRY_AGAIN_LATER, reason);
            if in_flight {
                self.force_close(key);
            } else {
                let due = self.now_ms + self.cfg.memory_budget_grace_ms;
                self.arm(key, TimerKind::Close, due);
            }
        }
    }

    /// Keeps one accept armed: multishot while the fixed-file table has room for a whole
    /// backlog burst (a multishot accept may take all of it in one go), one connection at a
    /// time below that, and none while the table is full, so no connection is ever taken off
    /// the backlog without a slot to answer it from.
    fn arm_accept(&mut self) {
        let table = self.cfg.connections_per_worker_max + SPARE_FIXED_FILES;
        let free = table.saturating_sub(self.accept.fixed_in_use);
        let multishot = free > self.cfg.listen_backlog + SPARE_FIXED_FILES;
        let a = &mut self.accept;
        if a.armed && a.multishot && !multishot && !a.cancelling {
            a.cancelling = true;
            self.sh.ops.push(Op::CancelAccept);
        }
        let ready = free > 0 && self.now_ms >= a.retry_at_ms && self.stop_at_ms.is_none();
        if !a.armed && !a.paused && ready {
            a.armed = true;
            a.multishot = multishot;
            self.sh.ops.push(Op::Accept {
                listener: self.listener.as_raw_fd(),
                multishot,
            });
        }
    }

    /// How long the loop may sleep: until the next timer (or the stop deadline).
    fn wait_ms(&self) -> Option<u64> {
        let stop = self.stop_at_ms.map(|s| {
            if self.forced_all {
                s + STOP_GRACE_MS
            } else {
                s
            }
        });
        let retry = (self.accept.retry_at_ms > self.now_ms).then_some(self.accept.retry_at_ms);
        let trim = self.sh.mem.deadline_ms();
        let next = [self.wheel.next_deadline_ms(), stop, retry, trim]
            .into_iter()
            .flatten()
            .min();
        next.map(|d| d.saturating_sub(self.now_ms).max(1))
    }
}

/// Starts a TLS connection's next send: what rustls encoded, then the queued frames encrypted
/// into the batch. Frames that cannot be encrypted (the connection failed) are dropped.
fn start_sealed(q: &mut SendQueue, t: &mut TlsConn) -> Option<SendOp> {
    if q.in_flight() {
        return None;
    }
    if !t.prepare_seal() {
        q.discard_queued();
    }
    let pending = t.take_pending();
    q.start_sealed(&pending, &mut |plain, out| t.seal(plain, out))
        .unwrap_or_else(|_| {
            q.discard_queued();
            None
        })
}

/// A positioned subscriber's "latest position" while its replay from the broker is pending
/// (the offset is the request's number). Real epochs have 48 bits.
const EPOCH_PENDING: u64 = u64::MAX;
/// The "latest position" of a positioned subscriber that takes every live message: its epoch
/// is none that a history makes, so the first message is always due.
const LAST_ANY: Position = Position {
    epoch: u64::MAX - 1,
    offset: 0,
};

/// The positioned subscribers of `topic` that have not had `at` yet (it is past the latest
/// position each was given, or of a newer epoch), into `due`; each is now at `at`.
fn positioned_due(
    positioned: &mut HashMap<Box<str>, Vec<(Key, Position)>>,
    topic: &str,
    at: Position,
    due: &mut Vec<Key>,
) {
    for (key, last) in positioned.get_mut(topic).into_iter().flatten() {
        // Waiting for its replay, which carries every message up to the broker's latest.
        if last.epoch == EPOCH_PENDING {
            continue;
        }
        if at.epoch != last.epoch || at.offset > last.offset {
            *last = at;
            due.push(*key);
        }
    }
}

/// The op for the next send of a queue (zero-copy for large batches when enabled).
fn send_op(key: Key, fd: u32, op: SendOp, q: &mut SendQueue, zc_bytes_min: usize) -> Op {
    if zc_bytes_min > 0 && q.inflight_bytes() >= zc_bytes_min {
        return Op::SendMsgZc {
            key,
            fd,
            msg: q.msg(),
        };
    }
    match op {
        SendOp::Buf(buf, len) => Op::Send { key, fd, buf, len },
        SendOp::Msg(msg) => Op::SendMsg { key, fd, msg },
        SendOp::Fixed(buf, len, index) => Op::SendFixed {
            key,
            fd,
            buf,
            len,
            index,
        },
    }
}

/// The worker's registered send memory; without it (e.g. RLIMIT_MEMLOCK too low) every send
/// goes out by `send`/`sendmsg`, and the reason is said once.
fn send_arena(ring: &Ring, cfg: &Config) -> Option<SendArena> {
    if cfg.send_buffers_per_worker == 0 {
        return None;
    }
    // Room for a frame header on top, so that a payload of send_buffer_bytes still fits.
    let chunk_bytes = cfg.send_buffer_bytes + frame::HEADER_BYTES_MAX as u32;
    SendArena::new(ring, cfg.send_buffers_per_worker, chunk_bytes)
        .map_err(|e| eprintln!("ringws: registered send buffers unavailable ({e}); using sendmsg"))
        .ok()
}

/// While a connection's reading is paused its hang-up is watched, so that a peer that leaves
/// is seen with nothing read from it; the poll is cancelled once reading resumes or the
/// connection ends (it is counted in the slot's ops, so the slot waits for it).
fn watch_hangup(sh: &mut Shared, key: Key, st: &mut ConnState) {
    let paused = st.has(flag::RECV_PAUSED) && !st.has(flag::PEER_DONE | flag::PEER_FIN);
    let want = paused && st.phase == Phase::Open;
    if want && !st.has(flag::WATCH_HUP) {
        st.set(flag::WATCH_HUP);
        let fd = st.fd;
        sh.submit(st, Op::WatchHangup { key, fd });
    } else if !want && st.has(flag::WATCH_HUP) && !st.has(flag::WATCH_CANCEL) {
        st.set(flag::WATCH_CANCEL);
        sh.ops.push(Op::CancelHangup { key });
    }
}

fn discarded(mut q: Box<SendQueue>) -> Box<SendQueue> {
    q.abort();
    q
}

/// The worker: ring, receive buffers, engine.
struct Worker<H> {
    ring: Ring,
    recv: RecvPool,
    eng: Engine<H>,
    cqes: Vec<Completion>,
    wake_buf: &'static mut u64,
    mail: Vec<Mail>,
}

impl<H: Handler> Worker<H> {
    fn new(setup: WorkerSetup, handler: H) -> io::Result<Worker<H>> {
        let cfg = setup.cfg.clone();
        let mut ring = Ring::new(cfg.ring_entries)?;
        // A share is at least one receive buffer (Config::recv_share_bytes).
        let share = cfg.recv_share_bytes.max(cfg.recv_buffer_bytes);
        if cfg.recv_share_bytes > 0 && !ring.set_recv_share(share) && setup.id == 0 {
            eprintln!(
                "ringws: this kernel cannot cap a multishot receive (Linux 6.16+); \
                 recv_share_bytes is ignored"
            );
        }
        let table = cfg.connections_per_worker_max + SPARE_FIXED_FILES;
        ring.submitter().register_files_sparse(table).map_err(|e| {
            io::Error::new(e.kind(), format!("registering {table} fixed files: {e}"))
        })?;
        let recv = RecvPool::new(
            &ring.submitter(),
            RECV_GROUP,
            cfg.recv_buffers_per_worker,
            cfg.recv_buffer_bytes,
        )?;
        let now_ms = sys::now_ms();
        let budget = setup.publisher.memory().clone();
        let mem = super::budget::Memory::new(&cfg, setup.metrics.clone(), budget);
        let sh = Shared {
            worker: setup.id,
            ops: Vec::new(),
            pool: SendPool::with_arena(send_arena(&ring, &cfg)),
            topics: HashMap::new(),
            positioned: HashMap::new(),
            resume_req: 0,
            resumes_pending: 0,
            resumes_pending_max: cfg.history_resumes_pending_per_worker_max,
            deferred: VecDeque::new(),
            dirty: Vec::new(),
            metrics: setup.metrics,
            all_metrics: setup.all_metrics,
            publisher: setup.publisher,
            send_queue_bytes_max: cfg.send_queue_bytes_max,
            policy: cfg.backpressure,
            zc_bytes_min: cfg.send_zc_bytes_min,
            gather_pool: Vec::new(),
            inflater: None,
            deflate_out: Vec::new(),
            deflate_level: cfg.deflate_level,
            deflate_bytes_min: cfg.deflate_compress_bytes_min,
            tls_plain: Vec::new(),
            mem,
        };
        let eng = Engine {
            limits: Limits::from_config(&cfg),
            deflate_policy: cfg.deflate_policy(),
            wheel: TimerWheel::new(table as usize, TICK_MS, WHEEL_SLOTS, now_ms),
            cfg,
            listener: setup.listener,
            handler,
            slots: Slots::new(),
            sh,
            now_ms,
            accept: AcceptState::default(),
            handshaking: 0,
            stop_at_ms: None,
            forced_all: false,
            keys: Vec::new(),
            dirty: Vec::new(),
            fired: Vec::new(),
            mask_seed: now_ms | 1,
            tls: setup.tls.map(WorkerTls::new),
        };
        let wake_buf = Box::leak(Box::new(0u64));
        Ok(Worker {
            ring,
            recv,
            eng,
            cqes: Vec::new(),
            wake_buf,
            mail: Vec::new(),
        })
    }

    fn arm_wake(&mut self) {
        let fd = self
            .eng
            .sh
            .publisher
            .mailbox(usize::from(self.eng.sh.worker))
            .wake_fd();
        let buf: *mut u64 = &mut *self.wake_buf;
        self.eng.sh.ops.push(Op::Wake { fd, buf });
    }

    fn run(&mut self) -> io::Result<()> {
        self.arm_wake();
        loop {
            self.eng.now_ms = sys::now_ms();
            self.eng.fire_timers();
            self.eng.flush();
            if self.eng.finished() {
                return Ok(());
            }
            for op in self.eng.sh.ops.drain(..) {
                // SAFETY: send ops point into a boxed `SendQueue` owned by a slot that is not
                // freed (nor its queue returned) while the op is in flight (`ops > 0`); the wake
                // buffer is leaked, so it outlives the ring; the other ops carry no pointers
                // (NoDelay's option value is a static).
                unsafe { self.ring.push(op) };
            }
            let wait = self.eng.wait_ms();
            self.ring.submit_and_wait(wait, &mut self.cqes)?;
            self.eng.now_ms = sys::now_ms();
            let cqes = std::mem::take(&mut self.cqes);
            for c in &cqes {
                self.complete(*c);
            }
            self.cqes = cqes;
        }
    }

    fn complete(&mut self, c: Completion) {
        let Some(event) = c.event() else { return };
        match event {
            Event::Accept { result, more } => self.eng.on_accept(result, more),
            Event::Recv {
                key,
                result,
                buffer,
                more,
            } => {
                if let Received::Data { bid, len } = result {
                    // Parsed in place, then given back at once.
                    self.eng.on_data(key, self.recv.buffer(bid, len));
                    self.recv.give_back(bid);
                } else if let Some(bid) = buffer {
                    self.recv.give_back(bid);
                }
                self.eng.on_recv_end(key, result, more);
            }
            Event::Send { key, result } => self.eng.on_sent(key, result),
            Event::SendZc { key, result, more } => self.eng.on_sent_zc(key, result, more),
            // A refused TCP_NODELAY only costs latency (the listener's setting is inherited
            // anyway); nothing to do but count the op done.
            Event::NoDelay { key, ok: _ } => {
                if let Some(slot) = self.eng.slots.get(key) {
                    slot.st.ops -= 1;
                    self.eng.sh.touch(key, &mut slot.st);
                }
            }
            Event::Shutdown { key } => self.eng.on_shutdown_done(key),
            Event::Close { key } => self.eng.on_close_done(key),
            Event::Hangup { key, seen } => self.eng.on_hangup(key, seen),
            Event::Wake => self.on_wake(),
            Event::CancelAccept | Event::CancelRecv => {}
        }
    }

    fn on_wake(&mut self) {
        let worker = usize::from(self.eng.sh.worker);
        self.eng.sh.publisher.mailbox(worker).take(&mut self.mail);
        let mut mail = std::mem::take(&mut self.mail);
        for m in mail.drain(..) {
            self.eng.on_mail(m);
        }
        self.mail = mail;
        self.arm_wake();
    }

    /// Leaves the ring quiescent before buffers are dropped; if it is not, leaks them rather
    /// than let the kernel write into freed memory.
    fn finish(mut self) {
        let quiet = self.eng.slots.is_empty();
        if !quiet {
            eprintln!(
                "ringws worker {}: {} connections still busy at exit; leaking their buffers",
                self.eng.sh.worker,
                self.eng.slots.len()
            );
        }
        let _ = self.ring.submit();
        drop(self.ring);
        if !quiet {
            std::mem::forget(self.recv);
            std::mem::forget(self.eng.slots);
        }
    }
}

impl<H> Worker<H> {
    /// After a panic (in a handler, or an assertion): the ring is closed and its connections
    /// end with it, the listener is closed so that SO_REUSEPORT stops routing connections here,
    /// and every buffer the kernel may still touch is leaked rather than freed.
    fn abandon(self) {
        let Worker {
            ring, recv, eng, ..
        } = self;
        drop(ring);
        std::mem::forget(recv);
        let Engine {
            listener,
            slots,
            sh,
            ..
        } = eng;
        drop(listener);
        std::mem::forget(slots);
        std::mem::forget(sh);
    }
}

/// Runs a worker on the calling thread until shutdown. `ready` gets `Ok` once the worker
/// accepts (or the set-up error).
pub(crate) fn run<H: Handler>(
    setup: WorkerSetup,
    handler: impl FnOnce() -> H,
    ready: Sender<io::Result<()>>,
) -> io::Result<()> {
    let mut worker = match Worker::new(setup, handler()) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    };
    let _ = ready.send(Ok(()));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
    match res {
        Ok(res) => {
            worker.finish();
            res
        }
        Err(panic) => {
            worker.abandon();
            std::panic::resume_unwind(panic)
        }
    }
}
