//! The embedding API: what an application implements ([`Handler`]) and the handles it uses to
//! send ([`Conn`] inside callbacks, [`Publisher`] from any thread). Handlers never touch the ring.
//!
//! One handler instance runs per worker, built on the worker's thread by a factory
//! `Fn(WorkerId) -> H`; it needs neither `Send` nor locks.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::config::BackpressurePolicy;
use crate::history::Position;
use crate::proto::connection::MessageKind;
use crate::proto::frame::{self, OpCode};
use crate::proto::handshake::Request;
use crate::runtime::budget::{MemoryBudget, counted};
use crate::topics::{HistoryStore, Sequenced};

pub use crate::proto::handshake::Request as UpgradeRequest;

/// Index of a worker thread (0-based).
pub type WorkerId = usize;

/// Names one connection of the server, unique while it lives (a reused slot gets a new
/// generation). Layout: worker (16 bits) | generation (24 bits) | slot index (24 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    pub(crate) fn new(worker: u16, index: u32, generation: u32) -> ConnId {
        assert!(index < 1 << 24 && generation < 1 << 24);
        ConnId(u64::from(worker) << 48 | u64::from(generation) << 24 | u64::from(index))
    }

    /// The worker that owns the connection.
    pub fn worker(self) -> WorkerId {
        (self.0 >> 48) as usize
    }

    pub(crate) fn index(self) -> u32 {
        (self.0 & 0xff_ffff) as u32
    }

    pub(crate) fn generation(self) -> u32 {
        ((self.0 >> 24) & 0xff_ffff) as u32
    }

    /// The id as a number (for logs and maps).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::fmt::Debug for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConnId({}:{}:{})",
            self.worker(),
            self.index(),
            self.generation()
        )
    }
}

/// A whole received message, borrowed from the receive buffer (or the reassembly buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    pub(crate) fn kind(&self) -> MessageKind {
        match self {
            Message::Text(_) => MessageKind::Text,
            Message::Binary(_) => MessageKind::Binary,
        }
    }

    pub(crate) fn payload(&self) -> &'a [u8] {
        match *self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }
}

/// The answer of [`Handler::on_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenDecision<'r> {
    /// Upgrade, optionally naming one of the offered subprotocols.
    Accept { protocol: Option<&'r str> },
    /// Refuse with this HTTP status (e.g. 401, 403, 404); the connection is closed after it.
    Reject(u16),
}

/// Why a message was not queued (see [`Handler::on_backpressure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// The send queue was over its limit: the connection is being closed with 1008.
    Closing,
    /// The send queue was over its limit: this message was dropped for this connection only.
    Dropped,
}

impl Backpressure {
    pub(crate) fn of(policy: BackpressurePolicy) -> Backpressure {
        match policy {
            BackpressurePolicy::Close => Backpressure::Closing,
            BackpressurePolicy::Drop => Backpressure::Dropped,
        }
    }
}

/// What an application implements. Every callback runs on the connection's worker thread.
pub trait Handler: 'static {
    /// A valid upgrade request arrived (Origin already checked against the allowlist). Accept it
    /// (picking a subprotocol from `req.protocols_iter()`) or reject it with an HTTP status.
    /// `conn` may subscribe to topics here; messages sent from `on_open` are not delivered (the
    /// 101 answer has not gone out yet).
    fn on_open<'r>(&mut self, conn: &mut Conn<'_>, req: &Request<'r>) -> OpenDecision<'r> {
        let _ = (conn, req);
        OpenDecision::Accept { protocol: None }
    }

    /// A whole message arrived.
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>);

    /// The connection ended: the peer's close code (the code we sent if the peer never answered,
    /// 1006 if no Close frame was exchanged at all). Called once per accepted connection.
    fn on_close(&mut self, id: ConnId, code: u16, reason: &str) {
        let _ = (id, code, reason);
    }

    /// The send queue emptied after it had gone over half its limit (or hit it).
    fn on_drain(&mut self, conn: &mut Conn<'_>) {
        let _ = conn;
    }

    /// A positioned subscription ([`Conn::subscribe_from`]) started: `resume` says what was
    /// replayed. The replayed messages follow whatever this callback sends, and the live ones
    /// follow them. With history on one node this comes in the same loop turn as the
    /// subscribe; with history in the broker (`Config::brokers`), once the broker answered.
    fn on_resume(&mut self, conn: &mut Conn<'_>, topic: &str, resume: Resume) {
        let _ = (conn, topic, resume);
    }

    /// A message could not be queued because the connection's send queue was over
    /// `send_queue_bytes_max`; `what` says what the server did.
    fn on_backpressure(&mut self, id: ConnId, queued_bytes: usize, what: Backpressure) {
        let _ = (id, queued_bytes, what);
    }
}

/// What a positioned subscription found when it started ([`Conn::subscribe_from`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Messages queued for replay (they arrive before any live message of the topic).
    pub replayed: usize,
    /// Some message after the resume point could not be replayed: history no longer reaches
    /// back to it, or the position is of another epoch (history was lost in between).
    pub gap: bool,
}

/// What a [`Conn`] asks of the runtime (implemented by the worker).
pub(crate) trait ConnOps {
    fn send(&mut self, kind: MessageKind, payload: &[u8]) -> bool;
    fn close(&mut self, code: u16, reason: &str);
    fn subscribe(&mut self, topic: &str);
    fn subscribe_from(&mut self, topic: &str, from: Option<Position>) -> bool;
    fn unsubscribe(&mut self, topic: &str);
    fn publish(&mut self, topic: &str, frame: Frame);
    fn broadcast(&mut self, frame: Frame);
    fn queued_bytes(&self) -> usize;
    fn publisher(&self) -> &Publisher;
}

/// The connection a callback is about. Sends are queued and leave at the end of the loop turn,
/// all in one send.
pub struct Conn<'a> {
    id: ConnId,
    ops: &'a mut dyn ConnOps,
}

impl<'a> Conn<'a> {
    pub(crate) fn new(id: ConnId, ops: &'a mut dyn ConnOps) -> Conn<'a> {
        Conn { id, ops }
    }

    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Queues a text message. False if it was not queued (closing, or backpressure).
    pub fn send_text(&mut self, text: &str) -> bool {
        self.ops.send(MessageKind::Text, text.as_bytes())
    }

    /// Queues a binary message. False if it was not queued (closing, or backpressure).
    pub fn send_binary(&mut self, data: &[u8]) -> bool {
        self.ops.send(MessageKind::Binary, data)
    }

    /// Queues a message of either kind.
    pub fn send(&mut self, msg: Message<'_>) -> bool {
        self.ops.send(msg.kind(), msg.payload())
    }

    /// Starts the close handshake with `code` (a code valid on the wire) and `reason`.
    pub fn close(&mut self, code: u16, reason: &str) {
        self.ops.close(code, reason);
    }

    /// Subscribes this connection to `topic` (on its worker).
    pub fn subscribe(&mut self, topic: &str) {
        self.ops.subscribe(topic);
    }

    /// Ends this connection's subscription to `topic`, positioned or not.
    pub fn unsubscribe(&mut self, topic: &str) {
        self.ops.unsubscribe(topic);
    }

    /// Subscribes this connection to `topic` with positions, resuming after `from`: every
    /// message of the topic then arrives as `<position> <payload>` (a text message for a text
    /// publish, binary for binary; the position is written as [`Position`]'s `Display`). With
    /// `from`, what the topic's history holds after it is replayed first, before any live
    /// message, with no gap or duplicate at the seam. [`Handler::on_resume`] tells what was
    /// replayed, before the replay. False when history is off
    /// (`Config::history_messages_max == 0`). Replaces a plain subscription to the same topic.
    pub fn subscribe_from(&mut self, topic: &str, from: Option<Position>) -> bool {
        self.ops.subscribe_from(topic, from)
    }

    /// Sends `msg` to every subscriber of `topic` on every worker (this connection included if
    /// subscribed). The frame is encoded once.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) {
        let publisher = self.ops.publisher();
        if publisher.history_on() {
            // Sequenced publishes go through every mailbox, this worker's too, in offset order.
            publisher.publish(topic, msg);
            return;
        }
        let frame = publisher.encode(msg);
        self.ops.publish(topic, frame);
    }

    /// Sends `msg` to every open connection on every worker. The frame is encoded once.
    pub fn broadcast(&mut self, msg: Message<'_>) {
        let frame = self.ops.publisher().encode(msg);
        self.ops.broadcast(frame);
    }

    /// Bytes queued for this connection and not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.ops.queued_bytes()
    }

    /// A handle usable from any thread.
    pub fn publisher(&self) -> Publisher {
        self.ops.publisher().clone()
    }
}

/// The message in a plain frame whose payload starts at `body` (text if `text` and valid).
fn message_at(plain: &[u8], text: bool, body: usize) -> Message<'_> {
    let payload = &plain[body..];
    match std::str::from_utf8(payload) {
        Ok(t) if text => Message::Text(t),
        _ => Message::Binary(payload),
    }
}

/// `<position> <payload>` the plain way: the body built first, then framed (and compressed,
/// if someone takes compressed frames) by [`Publisher::encode`].
fn encode_positioned_reference(p: &Publisher, position: Position, msg: Message<'_>) -> Frame {
    let mut body = position.to_string().into_bytes();
    body.push(b' ');
    body.extend_from_slice(msg.payload());
    match msg {
        Message::Text(_) => {
            let text = String::from_utf8(body).expect("ASCII + ' ' + UTF-8");
            p.encode(Message::Text(&text))
        }
        Message::Binary(_) => p.encode(Message::Binary(&body)),
    }
}

/// Encodes a whole server frame (unmasked) once, to be shared by reference.
pub(crate) fn encode_shared(msg: Message<'_>) -> Vec<u8> {
    let opcode = match msg {
        Message::Text(_) => OpCode::Text,
        Message::Binary(_) => OpCode::Binary,
    };
    let mut out = Vec::with_capacity(msg.payload().len() + frame::HEADER_BYTES_MAX);
    frame::encode_frame(&mut out, true, opcode, msg.payload(), None);
    out
}

/// A message framed once for many connections: the plain frame, and the compressed one
/// (permessage-deflate, no context takeover, 15-bit window) when it was worth making.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub plain: Bytes,
    pub deflated: Option<Bytes>,
}

impl Frame {
    /// The frame for a connection that agreed to deflate with `window_bits` (0: not agreed).
    pub(crate) fn for_window(&self, window_bits: u8) -> &Bytes {
        match &self.deflated {
            Some(d) if window_bits == crate::proto::deflate::WINDOW_BITS_MAX => d,
            _ => &self.plain,
        }
    }
}

/// How shared frames are compressed, and whether anyone would read a compressed one.
pub(crate) struct SharedDeflate {
    pub enabled: bool,
    pub level: u8,
    pub bytes_min: usize,
    /// Open connections (all workers) that take 15-bit-window compressed frames. While it is
    /// 0, shared frames are not compressed at all.
    pub receivers: AtomicUsize,
}

impl SharedDeflate {
    pub(crate) fn from_config(cfg: &crate::config::Config) -> SharedDeflate {
        SharedDeflate {
            enabled: cfg.deflate,
            level: cfg.deflate_level,
            bytes_min: cfg.deflate_compress_bytes_min,
            receivers: AtomicUsize::new(0),
        }
    }
}

thread_local! {
    /// This thread's compressors (a worker's, or a publishing thread's), by window bits - 8, each
    /// with the level it was made for. One compressor serves every message: each starts from an
    /// empty window (no context takeover).
    static DEFLATERS: RefCell<[Option<(u8, crate::proto::deflate::Deflater)>; 8]> =
        const { RefCell::new([const { None }; 8]) };
}

/// Runs `f` with this thread's compressor for `window_bits` (8–15) at `level`, made when first
/// needed (about 380 KiB for 15 bits).
pub(crate) fn with_deflater<R>(
    level: u8,
    window_bits: u8,
    f: impl FnOnce(&mut crate::proto::deflate::Deflater) -> R,
) -> R {
    use crate::proto::deflate::{Deflater, WINDOW_BITS_MAX, WINDOW_BITS_MIN};
    let bits = window_bits.clamp(WINDOW_BITS_MIN, WINDOW_BITS_MAX);
    DEFLATERS.with_borrow_mut(|all| {
        let slot = &mut all[usize::from(bits - WINDOW_BITS_MIN)];
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, Deflater::new(level, bits)));
        }
        let (_, d) = slot.as_mut().expect("made above");
        f(d)
    })
}

/// Compresses `payload` once for every receiver (15-bit window, empty window first) into a whole
/// frame with RSV1, which starts at the returned offset. None if compressing would not make it
/// smaller.
fn encode_deflated(msg: Message<'_>, level: u8) -> Option<(Vec<u8>, usize)> {
    use crate::proto::deflate::WINDOW_BITS_MAX;
    let payload = msg.payload();
    let mut out = Vec::with_capacity(payload.len() / 2 + frame::HEADER_BYTES_MAX + 64);
    out.resize(frame::HEADER_BYTES_MAX, 0);
    with_deflater(level, WINDOW_BITS_MAX, |d| {
        d.compress_message(payload, &mut out)
    });
    let body = out.len() - frame::HEADER_BYTES_MAX;
    if body >= payload.len() {
        return None;
    }
    let opcode = match msg {
        Message::Text(_) => OpCode::Text,
        Message::Binary(_) => OpCode::Binary,
    };
    let mut hdr = [0u8; frame::HEADER_BYTES_MAX];
    let n = frame::encode_header(&mut hdr, true, frame::RSV1, opcode, body as u64, None);
    let start = frame::HEADER_BYTES_MAX - n;
    out[start..frame::HEADER_BYTES_MAX].copy_from_slice(&hdr[..n]);
    Some((out, start))
}

/// Work handed to a worker by other threads.
pub(crate) enum Mail {
    /// A frame for one connection.
    Send(ConnId, Frame),
    /// A frame for every subscriber of a topic, and its positioned twin when history is on.
    Publish(Arc<str>, Frame, Option<Arc<Sequenced>>),
    /// A frame for every open connection.
    Broadcast(Frame),
    /// The broker's history answered a resume (`req` is the worker's number for it): the
    /// frames to replay, the topic's latest position then (None: it has no history), a gap.
    Resumed {
        id: ConnId,
        topic: Arc<str>,
        req: u64,
        frames: Vec<Frame>,
        last: Option<Position>,
        gap: bool,
    },
    /// Start the graceful shutdown.
    Shutdown,
}

/// A worker's inbox and the eventfd that wakes its ring.
pub(crate) struct Mailbox {
    queue: Mutex<Vec<Mail>>,
    wake_fd: std::os::fd::OwnedFd,
}

impl Mailbox {
    pub(crate) fn new(wake_fd: std::os::fd::OwnedFd) -> Mailbox {
        Mailbox {
            queue: Mutex::new(Vec::new()),
            wake_fd,
        }
    }

    pub(crate) fn wake_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.wake_fd.as_raw_fd()
    }

    /// Queues mail and wakes the worker if the box was empty.
    pub(crate) fn post(&self, mail: Mail) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let was_empty = q.is_empty();
            q.push(mail);
            was_empty
        };
        if was_empty {
            crate::runtime::sys::eventfd_wake(self.wake_fd());
        }
    }

    /// Takes everything queued (swapping with `into`, which must be empty).
    pub(crate) fn take(&self, into: &mut Vec<Mail>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *q, into);
    }
}

/// A cloneable handle to send to connections, publish to topics and broadcast, from any thread.
/// Each call frames the message once; each worker delivers it to its own connections.
#[derive(Clone)]
pub struct Publisher {
    mailboxes: Arc<[Mailbox]>,
    deflate: Arc<SharedDeflate>,
    history: Option<Arc<HistoryStore>>,
    /// The other nodes, through the broker (`Config::brokers`), if any.
    broker: Option<Arc<crate::broker::Hub>>,
    /// Shared frames are counted against it while they exist.
    memory: Arc<MemoryBudget>,
}

impl Publisher {
    pub(crate) fn new(
        mailboxes: Arc<[Mailbox]>,
        deflate: Arc<SharedDeflate>,
        history: Option<Arc<HistoryStore>>,
        memory: Arc<MemoryBudget>,
    ) -> Publisher {
        Publisher {
            mailboxes,
            deflate,
            history,
            broker: None,
            memory,
        }
    }

    /// The topic history on this node, when it is on and no broker keeps it.
    pub(crate) fn history(&self) -> Option<&HistoryStore> {
        self.history.as_deref()
    }

    /// Whether publishes get positions (history on, on this node or in the broker).
    pub(crate) fn history_on(&self) -> bool {
        self.history.is_some() || self.broker_history().is_some()
    }

    /// The broker, when it keeps the topic history for every node.
    pub(crate) fn broker_history(&self) -> Option<&crate::broker::Hub> {
        self.broker.as_deref().filter(|b| b.keeps_history())
    }

    /// Drops the history of the topics `which` names (see `HistoryStore::forget`).
    pub(crate) fn forget_history(&self, which: impl Fn(&str) -> bool) {
        if let Some(h) = &self.history {
            h.forget(which);
        }
    }

    /// The same handle, publishing through `hub` to the other nodes too.
    pub(crate) fn with_broker(mut self, hub: Option<Arc<crate::broker::Hub>>) -> Publisher {
        self.broker = hub;
        self
    }

    /// A worker's first subscriber to `topic` came (`up`), or its last one left: the node
    /// subscribes to the topic on the broker while some worker has one.
    pub(crate) fn demand(&self, topic: &str, up: bool) {
        if let Some(b) = &self.broker {
            b.demand(topic, up);
        }
    }

    pub(crate) fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    pub(crate) fn deflate(&self) -> &SharedDeflate {
        &self.deflate
    }

    /// Frames `msg` once, plain, and compressed too if some connection would take it.
    pub(crate) fn encode(&self, msg: Message<'_>) -> Frame {
        Frame {
            deflated: self.deflated(msg),
            plain: counted(encode_shared(msg), &self.memory),
        }
    }

    /// The compressed twin of `msg`'s frame, if some connection would take it.
    fn deflated(&self, msg: Message<'_>) -> Option<Bytes> {
        let d = &*self.deflate;
        (d.enabled && msg.payload().len() >= d.bytes_min && d.receivers.load(Relaxed) > 0)
            .then(|| encode_deflated(msg, d.level))
            .flatten()
            .map(|(bytes, start)| counted(bytes, &self.memory).slice(start..))
    }

    /// A [`Frame`] around an already encoded plain frame whose payload starts at `body` (one
    /// whole unmasked text or binary frame, checked by the broker envelope, text valid UTF-8),
    /// compressed too if someone takes it.
    pub(crate) fn frame_of_plain(&self, plain: Bytes, text: bool, body: usize) -> Frame {
        let d = &*self.deflate;
        let payload = &plain[body..];
        let worth = d.enabled && payload.len() >= d.bytes_min && d.receivers.load(Relaxed) > 0;
        let msg = match (text, worth) {
            (true, true) => {
                simdutf8::basic::from_utf8(payload).map_or(Message::Binary(payload), Message::Text)
            }
            _ => Message::Binary(payload),
        };
        let deflated = if worth { self.deflated(msg) } else { None };
        Frame { plain, deflated }
    }

    pub(crate) fn mailbox(&self, worker: WorkerId) -> &Mailbox {
        &self.mailboxes[worker]
    }

    /// Sends `msg` to connection `id` (dropped if it is gone or closing).
    pub fn send(&self, id: ConnId, msg: Message<'_>) {
        if let Some(m) = self.mailboxes.get(id.worker()) {
            m.post(Mail::Send(id, self.encode(msg)));
        }
    }

    /// Sends `msg` to every subscriber of `topic`. With history on, the message gets the
    /// topic's next position and is kept for resumes.
    pub fn publish(&self, topic: &str, msg: Message<'_>) {
        let frame = self.encode(msg);
        if let Some(b) = self.broker_history() {
            // The broker gives the position, and brings it back to this node's subscribers too,
            // so that every node delivers a topic in one order.
            return b.publish(
                crate::broker::Kind::Publish,
                &Arc::from(topic),
                &frame.plain,
            );
        }
        if self.history.is_none() {
            return self.publish_frame(topic, frame, None);
        }
        let topic: Arc<str> = Arc::from(topic);
        if let Some(b) = &self.broker {
            b.publish(crate::broker::Kind::Publish, &topic, &frame.plain);
        }
        self.sequence(topic, frame, msg);
    }

    /// History on: gives the message this node's next position for `topic`, keeps it, and posts
    /// it to every worker (this one too) under the history's lock, so mailboxes keep offset order.
    fn sequence(&self, topic: Arc<str>, frame: Frame, msg: Message<'_>) {
        let history = self.history.as_ref().expect("history is on");
        history.publish(
            &topic,
            |position| self.encode_positioned(position, msg),
            |seq| self.post_sequenced(&topic, &frame, seq),
        );
    }

    /// A message with its position to every worker (this one too).
    fn post_sequenced(&self, topic: &Arc<str>, frame: &Frame, seq: Sequenced) {
        let seq = Arc::new(seq);
        for m in self.mailboxes.iter() {
            m.post(Mail::Publish(
                topic.clone(),
                frame.clone(),
                Some(seq.clone()),
            ));
        }
    }

    /// A message of the broker's history (its plain frame, payload at `body`) to every local
    /// worker, with its position.
    pub(crate) fn deliver_positioned(
        &self,
        topic: Arc<str>,
        frame: Frame,
        position: Position,
        text: bool,
        body: usize,
    ) {
        let positioned = self.positioned_of_plain(position, &frame.plain, text, body);
        let seq = Sequenced {
            position,
            frame: positioned,
        };
        self.post_sequenced(&topic, &frame, seq);
    }

    /// The positioned frame of a plain one (payload at `body`, text if `text`).
    pub(crate) fn positioned_of_plain(
        &self,
        position: Position,
        plain: &[u8],
        text: bool,
        body: usize,
    ) -> Frame {
        self.encode_positioned(position, message_at(plain, text, body))
    }

    /// `<position> <payload>`, framed once (text stays text: a position is ASCII).
    /// Framed in one allocation: the header, the position and the payload are written straight
    /// into the frame (no intermediate body; text needs no second UTF-8 check, as an ASCII
    /// position and a space before valid UTF-8 are valid UTF-8). A frame that may be compressed
    /// takes the general path ([`encode_positioned_reference`], which the tests compare with).
    fn encode_positioned(&self, position: Position, msg: Message<'_>) -> Frame {
        use std::io::Write as _;
        let payload = msg.payload();
        // "<16 hex digits>-<20 digits> " at most.
        let mut head = [0u8; 40];
        let n = {
            let mut w = &mut head[..];
            write!(w, "{position} ").expect("a position fits in 40 bytes");
            40 - w.len()
        };
        let body_len = n + payload.len();
        let d = &*self.deflate;
        if d.enabled && body_len >= d.bytes_min && d.receivers.load(Relaxed) > 0 {
            return encode_positioned_reference(self, position, msg);
        }
        let opcode = match msg {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        };
        let mut hdr = [0u8; frame::HEADER_BYTES_MAX];
        let h = frame::encode_header(&mut hdr, true, 0, opcode, body_len as u64, None);
        let mut out = Vec::with_capacity(h + body_len);
        out.extend_from_slice(&hdr[..h]);
        out.extend_from_slice(&head[..n]);
        out.extend_from_slice(payload);
        Frame {
            plain: counted(out, &self.memory),
            deflated: None,
        }
    }

    /// Sends `msg` to every open connection.
    pub fn broadcast(&self, msg: Message<'_>) {
        self.broadcast_frame(self.encode(msg), None);
    }

    /// A publish made on this node: to the broker (other nodes), and to every worker but `skip`
    /// (the publishing worker delivers to its own subscribers itself).
    pub(crate) fn publish_frame(&self, topic: &str, frame: Frame, skip: Option<WorkerId>) {
        let topic: Arc<str> = Arc::from(topic);
        if let Some(b) = &self.broker {
            b.publish(crate::broker::Kind::Publish, &topic, &frame.plain);
        }
        self.post_publish(topic, frame, skip);
    }

    fn post_publish(&self, topic: Arc<str>, frame: Frame, skip: Option<WorkerId>) {
        for (i, m) in self.mailboxes.iter().enumerate() {
            if Some(i) != skip {
                m.post(Mail::Publish(topic.clone(), frame.clone(), None));
            }
        }
    }

    /// A broadcast made on this node: to the broker, and to every worker but `skip`.
    pub(crate) fn broadcast_frame(&self, frame: Frame, skip: Option<WorkerId>) {
        if let Some(b) = &self.broker {
            b.publish(crate::broker::Kind::Broadcast, &Arc::from(""), &frame.plain);
        }
        self.post_broadcast(frame, skip);
    }

    fn post_broadcast(&self, frame: Frame, skip: Option<WorkerId>) {
        for (i, m) in self.mailboxes.iter().enumerate() {
            if Some(i) != skip {
                m.post(Mail::Broadcast(frame.clone()));
            }
        }
    }

    /// A publish from another node (through the broker): to every local worker only.
    /// With history on, the message gets this node's next position first (so a node's
    /// positions are its own: a resume on another node is told of a gap, never silently
    /// misses). `text` and `body` say where the frame's payload is (as for `frame_of_plain`).
    pub(crate) fn deliver_publish(&self, topic: Arc<str>, frame: Frame, text: bool, body: usize) {
        if self.history.is_none() {
            return self.post_publish(topic, frame, None);
        }
        let plain = frame.plain.clone();
        self.sequence(topic, frame, message_at(&plain, text, body));
    }

    /// A broadcast from another node: to every local worker only.
    pub(crate) fn deliver_broadcast(&self, frame: Frame) {
        self.post_broadcast(frame, None);
    }

    /// Asks every worker to shut down gracefully, and the broker threads to leave.
    pub(crate) fn shutdown(&self) {
        for m in self.mailboxes.iter() {
            m.post(Mail::Shutdown);
        }
        if let Some(b) = &self.broker {
            b.stop();
        }
    }

    /// Waits for the broker threads (after [`Publisher::shutdown`]).
    pub(crate) fn join_broker(&self) {
        if let Some(b) = &self.broker {
            b.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_id_packs_its_parts() {
        let id = ConnId::new(3, 19_999, (1 << 24) - 1);
        assert_eq!(
            (id.worker(), id.index(), id.generation()),
            (3, 19_999, (1 << 24) - 1)
        );
        assert_ne!(ConnId::new(0, 1, 2), ConnId::new(0, 1, 3));
    }

    #[test]
    fn shared_frames_are_whole_server_frames() {
        let b = encode_shared(Message::Text("hi"));
        assert_eq!(&b[..], &[0x81, 2, b'h', b'i']);
        let big = vec![7u8; 300];
        let b = encode_shared(Message::Binary(&big));
        assert_eq!(&b[..4], &[0x82, 126, 1, 44]);
        assert_eq!(b.len(), 304);
    }

    /// A publisher with no workers and the default deflate settings.
    fn test_publisher() -> Publisher {
        let cfg = crate::config::Config::default();
        Publisher::new(
            Arc::from(Vec::new()),
            Arc::new(SharedDeflate::from_config(&cfg)),
            None,
            Arc::new(MemoryBudget::new(1 << 30)),
        )
    }

    #[test]
    fn positioned_frames_match_the_reference() {
        let p = test_publisher();
        let positions = [
            Position::start(0),
            Position {
                epoch: 0xabc,
                offset: 7,
            },
            Position {
                epoch: u64::MAX,
                offset: u64::MAX,
            },
        ];
        // Across the 7-bit, 16-bit and 64-bit length forms, with multi-byte UTF-8.
        for len in [0, 1, 80, 125, 126, 200, 65_535, 65_536, 70_000] {
            let text: String = "é".repeat(len / 2) + &"a".repeat(len % 2);
            let bin = vec![0xa5u8; len];
            for &pos in &positions {
                for msg in [Message::Text(&text), Message::Binary(&bin)] {
                    let fast = p.encode_positioned(pos, msg);
                    let slow = encode_positioned_reference(&p, pos, msg);
                    assert_eq!(fast.plain, slow.plain, "{pos} {len}");
                    assert!(fast.deflated.is_none() && slow.deflated.is_none());
                }
            }
        }
        // Someone takes compressed frames: the general path, compressed twin included.
        p.deflate().receivers.fetch_add(1, Relaxed);
        let json = r#"{"price":"43127.55","size":"0.0021","side":"buy"}"#.repeat(8);
        let f = p.encode_positioned(positions[1], Message::Text(&json));
        let r = encode_positioned_reference(&p, positions[1], Message::Text(&json));
        assert_eq!(f.plain, r.plain);
        assert!(f.deflated.is_some());
    }

    #[test]
    fn shared_frames_are_compressed_once_when_someone_takes_them() {
        use crate::proto::deflate::Inflater;
        let p = test_publisher();
        let json =
            r#"{"symbol":"BTC-USD","price":"43127.55","size":"0.0021","side":"buy"}"#.repeat(4);
        // Nobody takes compressed frames: none is made.
        assert!(p.encode(Message::Text(&json)).deflated.is_none());
        p.deflate().receivers.fetch_add(1, Relaxed);
        let f = p.encode(Message::Text(&json));
        let d = f.deflated.clone().expect("compressed");
        assert_eq!(d[0], 0xc1, "FIN + RSV1 + text");
        let (len, hdr) = match d[1] {
            126 => (u16::from_be_bytes([d[2], d[3]]) as usize, 4),
            n => (n as usize, 2),
        };
        assert_eq!(d.len(), hdr + len);
        assert!(d.len() < f.plain.len());
        let mut out = Vec::new();
        Inflater::new()
            .inflate_message(&d[hdr..], &mut out, 1 << 20, true)
            .unwrap();
        assert_eq!(out, json.as_bytes());
        assert_eq!(f.for_window(15), &d);
        assert_eq!(f.for_window(12), &f.plain);
        assert_eq!(f.for_window(0), &f.plain);
        // Below the threshold: plain only.
        assert!(p.encode(Message::Text("short")).deflated.is_none());
    }
}
