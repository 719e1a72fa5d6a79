//! Cross-node pub/sub through a broker (Redis first): a publish on any node reaches the
//! subscribers of every node.
//!
//! ```text
//!  worker ── Publisher::publish / Conn::publish ──► local mailboxes (delivered at once)
//!     │                                        └──► shard queue (bounded; past it: dropped, counted)
//!     │ first sub / last unsub of a topic on this worker                  │
//!     ▼                                                                   ▼
//!  shard demand (topic → ±1)                          publish thread: pipelined PUBLISH
//!     │                                                                   │
//!     ▼                                                                  Redis
//!  subscribe thread: SUBSCRIBE while the node has ≥ 1 subscriber ◄────────┘
//!     │ envelope checked; own messages skipped; gaps in (origin, seq) counted as lost
//!     └──► framed once (and compressed once) ──► every local worker's mailbox
//! ```
//!
//! Each shard (one Redis) has two threads and two connections: a connection in subscribe mode
//! may send nothing but (UN)SUBSCRIBE/PING, and the `redis` crate's synchronous client blocks
//! in reads. The publish thread sleeps on its queue and writes pipelines; the subscribe thread
//! blocks reading messages, waking every `broker_subscribe_poll_ms` to apply demand changes.
//! A worker only ever takes two short mutexes (the shard queue, the demand map): it never
//! waits for Redis. Topics are spread over shards by a jump consistent hash
//! ([`hash::shard_of`]).

mod envelope;
pub mod hash;
mod redis_broker;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

pub use envelope::{Envelope, HEADER_BYTES, Invalid, Kind};
pub use redis_broker::RedisBroker;

use crate::config::Config;
use crate::handler::{Frame, Publisher};
use crate::history::{HistoryLimits, Position};
use crate::history_redis::StreamReplay;

/// A message system between nodes, one instance of it (one shard).
///
/// The runtime drives it from two threads per shard: one calls [`Broker::connect_publisher`]
/// and publishes through the link, the other runs [`Broker::run_subscriber`]. Either is called
/// again, after a backoff, when it fails.
pub trait Broker: Send + Sync + 'static {
    /// A name for logs and `/metrics` (the URL).
    fn describe(&self) -> String;
    /// Opens a connection for publishing (connect, read and write bounded by `timeout`).
    fn connect_publisher(&self, timeout: Duration) -> io::Result<Box<dyn PublishLink>>;
    /// Connects, calls `session.connected()`, then until `session.changes` says stop: applies
    /// the (un)subscriptions it returns (then `session.subscribed`), hands every message
    /// to `session.deliver`, waiting at most `poll` for one, and calls `session.settled()` once
    /// per turn (required: resumes from the history are served there). Returns `Err` when the
    /// link fails.
    fn run_subscriber(
        &self,
        timeout: Duration,
        poll: Duration,
        session: &mut dyn SubscribeSession,
    ) -> io::Result<()>;
    /// Opens a connection to the topic history this broker keeps (with history on: the
    /// publish thread appends through it, the subscribe thread replays through it).
    fn connect_history(
        &self,
        timeout: Duration,
        limits: HistoryLimits,
    ) -> io::Result<Box<dyn HistoryLink>>;
}

/// A connection to the history a broker keeps for every node (Redis Streams).
pub trait HistoryLink: Send {
    /// Appends each `(topic, channel, payload)` to its topic's history and publishes it on
    /// `channel` as `<epoch hex> <offset> <payload>`, atomically and in order; the positions
    /// go to `out`. `new_epoch` starts a topic that has no history. `Err`: the link is broken
    /// and the fate of the batch is unknown.
    fn publish(
        &mut self,
        batch: &[(&str, &[u8], &[u8])],
        now_ms: u64,
        new_epoch: u64,
        out: &mut Vec<Position>,
    ) -> io::Result<()>;
    /// What a subscriber that has seen `topic` up to `after` missed (see
    /// [`StreamHistory::replay_after`](crate::history_redis::StreamHistory::replay_after)).
    fn replay_after(
        &mut self,
        topic: &str,
        after: Position,
        now_ms: u64,
    ) -> io::Result<StreamReplay>;
}

/// A connection that publishes.
pub trait PublishLink: Send {
    /// Publishes each `(channel, payload)` in order, pipelined. `Err`: the link is broken and
    /// the fate of the whole batch is unknown (some may have been published).
    fn publish(&mut self, batch: &[(&[u8], &[u8])]) -> io::Result<()>;
}

/// What a subscribe connection reports to (and asks of) the runtime.
pub trait SubscribeSession {
    /// The link is up (every channel needed will be returned by the next `changes`).
    fn connected(&mut self);
    /// Fills the channels to subscribe and to unsubscribe now; true when the link should end.
    fn changes(&mut self, subscribe: &mut Vec<String>, unsubscribe: &mut Vec<String>) -> bool;
    /// The last `changes` were applied (confirmed by the broker).
    fn subscribed(&mut self, subscribed: usize, unsubscribed: usize);
    /// A message arrived on `channel`.
    fn deliver(&mut self, channel: &str, payload: &[u8]);
    /// Every change returned so far is applied: called once per turn of the link's loop,
    /// between messages (work that must follow a confirmed subscription runs here).
    fn settled(&mut self) {}
}

/// First wait after a failed connection; it doubles up to `broker_reconnect_max_ms`.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Bytes counted per queued publish besides its frame and topic (the queue entry, the Arc).
const ENTRY_OVERHEAD_BYTES: usize = 64;
/// Topics a publish thread keeps a sequence for; past it, it forgets them all and starts a
/// new epoch (receivers then start afresh for this origin: nothing is counted lost).
const SEQ_TOPICS_MAX: usize = 1 << 20;
/// Largest broker-hop latency recorded, in µs (a minute).
const HOP_US_MAX: u64 = 60_000_000;

/// The broker's counters (summed over shards), rendered into `/metrics`.
pub struct BrokerMetrics {
    urls: Vec<String>,
    /// Per shard: [publish link up, subscribe link up] (0 or 1).
    links: Vec<[AtomicU64; 2]>,
    /// Publishes Redis acknowledged.
    pub published: AtomicU64,
    /// Publishes dropped: the shard queue was full (`broker_queue_bytes_max`) or the server
    /// stopped with them queued. Their remote subscribers never get them.
    pub publish_dropped: AtomicU64,
    /// Publishes in a pipeline whose link broke before the replies: some may have been
    /// published. Those that were not show up as `lost` at the receivers.
    pub publish_unconfirmed: AtomicU64,
    /// Publishes waiting in the shard queues.
    pub queued: AtomicU64,
    /// Messages from other nodes delivered to local workers.
    pub received: AtomicU64,
    /// Messages from other nodes that never arrived, by gaps in their sequence.
    pub lost: AtomicU64,
    /// Messages that arrived at or behind a position already seen (not delivered).
    pub stale: AtomicU64,
    /// Messages refused: not an envelope, or a frame a client may not be sent.
    pub invalid: AtomicU64,
    /// Links that failed (publish or subscribe) and were connected again.
    pub reconnects: AtomicU64,
    /// Channels subscribed now (confirmed).
    pub channels: AtomicU64,
    /// With history in the broker: resumes replayed from it, and those that were a gap.
    pub replays: AtomicU64,
    pub replay_gaps: AtomicU64,
    /// With history in the broker: messages the link skipped (a gap in offsets, or an outage
    /// of the subscribe link) that were fetched from the history and delivered in order.
    pub repaired: AtomicU64,
    /// Publish → delivery to local workers across the broker, in µs (wall clocks of two nodes).
    hop_us: Mutex<hdrhistogram::Histogram<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BrokerMetrics {
    fn new(urls: Vec<String>) -> BrokerMetrics {
        BrokerMetrics {
            links: urls.iter().map(|_| Default::default()).collect(),
            urls,
            published: AtomicU64::new(0),
            publish_dropped: AtomicU64::new(0),
            publish_unconfirmed: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            received: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            channels: AtomicU64::new(0),
            replays: AtomicU64::new(0),
            replay_gaps: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            hop_us: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, HOP_US_MAX, 3).expect("bounds"),
            ),
        }
    }

    /// Whether every link of every shard is up.
    pub fn all_up(&self) -> bool {
        self.links
            .iter()
            .all(|l| l.iter().all(|u| u.load(Relaxed) == 1))
    }

    /// The broker-hop latency at quantile `q` (0..=1), in µs; 0 before any message.
    pub fn hop_us_at(&self, q: f64) -> u64 {
        lock(&self.hop_us).value_at_quantile(q)
    }

    fn set_link(&self, shard: usize, link: usize, up: bool) {
        self.links[shard][link].store(u64::from(up), Relaxed);
    }

    /// Appends the broker's lines to a Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            out,
            "ringws_broker_link_up",
            "gauge",
            "1 while the link to the broker shard is connected.",
        );
        for (i, l) in self.links.iter().enumerate() {
            for (j, name) in ["publish", "subscribe"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ringws_broker_link_up{{shard=\"{i}\",url=\"{}\",link=\"{name}\"}} {}",
                    self.urls[i].replace(['"', '\\'], "_"),
                    l[j].load(Relaxed)
                );
            }
        }
        let counters = [
            (
                "ringws_broker_published_total",
                "Publishes acknowledged by the broker.",
                &self.published,
            ),
            (
                "ringws_broker_publish_dropped_total",
                "Publishes dropped before the broker: queue full, or queued at shutdown.",
                &self.publish_dropped,
            ),
            (
                "ringws_broker_publish_unconfirmed_total",
                "Publishes sent on a link that broke before the broker answered.",
                &self.publish_unconfirmed,
            ),
            (
                "ringws_broker_received_total",
                "Messages from other nodes delivered to local workers.",
                &self.received,
            ),
            (
                "ringws_broker_lost_total",
                "Messages from other nodes missed (gaps in their sequence).",
                &self.lost,
            ),
            (
                "ringws_broker_stale_total",
                "Messages at or behind a position already seen (not delivered).",
                &self.stale,
            ),
            (
                "ringws_broker_invalid_total",
                "Broker messages refused (bad envelope or frame).",
                &self.invalid,
            ),
            (
                "ringws_broker_reconnects_total",
                "Broker links that failed and were connected again.",
                &self.reconnects,
            ),
            (
                "ringws_broker_history_replays_total",
                "Resumes replayed from the broker's history.",
                &self.replays,
            ),
            (
                "ringws_broker_history_replay_gaps_total",
                "Resumes from the broker's history that were a gap.",
                &self.replay_gaps,
            ),
            (
                "ringws_broker_history_repaired_total",
                "Messages the subscribe link missed, fetched from the broker's history.",
                &self.repaired,
            ),
        ];
        for (name, help, c) in counters {
            head(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", c.load(Relaxed));
        }
        for (name, help, c) in [
            (
                "ringws_broker_channels",
                "Broker channels subscribed now.",
                &self.channels,
            ),
            (
                "ringws_broker_queued",
                "Publishes waiting for the broker.",
                &self.queued,
            ),
        ] {
            head(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", c.load(Relaxed));
        }
        head(
            out,
            "ringws_broker_hop_latency_us",
            "summary",
            "Publish on another node to delivery here to the workers, in microseconds.",
        );
        let h = lock(&self.hop_us);
        for q in [0.5, 0.99, 0.999] {
            let _ = writeln!(
                out,
                "ringws_broker_hop_latency_us{{quantile=\"{q}\"}} {}",
                h.value_at_quantile(q)
            );
        }
        let _ = writeln!(out, "ringws_broker_hop_latency_us_count {}", h.len());
    }
}

/// A publish waiting for its shard's publish thread.
struct Outgoing {
    kind: Kind,
    topic: Arc<str>,
    frame: Bytes,
    cost: usize,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    bytes: usize,
}

struct Shard {
    broker: Box<dyn Broker>,
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Changes in the number of workers with a subscriber, by topic, not yet applied by the
    /// subscribe thread (coalesced: a sub then an unsub cancel out).
    demand: Mutex<HashMap<Arc<str>, i64>>,
    /// Resumes waiting for the subscribe thread (with history in the broker). A worker queues
    /// one after its demand change; the thread takes them before the demand, so a request is
    /// served only once the channel it needs is subscribed.
    requests: Mutex<Vec<ReplayRequest>>,
}

/// A positioned subscription waiting for its replay from the broker's history.
pub(crate) struct ReplayRequest {
    pub id: crate::handler::ConnId,
    pub topic: Arc<str>,
    pub from: Position,
    /// The worker's number for this request (its answer names it).
    pub req: u64,
}

/// The broker side of a node: its shards and their threads.
pub(crate) struct Hub {
    /// This node's id in envelopes (random per start), to skip its own messages.
    node: u64,
    prefix: Box<str>,
    shards: Box<[Shard]>,
    pub(crate) metrics: Arc<BrokerMetrics>,
    stop: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    queue_bytes_max: usize,
    pipeline_max: usize,
    timeout: Duration,
    poll: Duration,
    reconnect_max: Duration,
    /// With history on: the limits of the history the broker keeps for every node. Publishes
    /// then get their positions from the broker, and reach local subscribers through it too.
    history: Option<HistoryLimits>,
}

/// Where a broker channel's messages go.
enum Target<'a> {
    Topic(&'a str),
    Broadcast,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Hub {
    /// One shard per URL in `cfg.brokers` (nothing is connected yet). None without brokers.
    pub(crate) fn new(cfg: &Config) -> io::Result<Option<Arc<Hub>>> {
        if cfg.brokers.is_empty() {
            return Ok(None);
        }
        let shards = cfg
            .brokers
            .iter()
            .map(|url| {
                Ok(Shard {
                    broker: Box::new(RedisBroker::new(url)?) as Box<dyn Broker>,
                    queue: Mutex::default(),
                    ready: Condvar::new(),
                    demand: Mutex::default(),
                    requests: Mutex::default(),
                })
            })
            .collect::<io::Result<Box<[Shard]>>>()?;
        let urls = shards.iter().map(|s| s.broker.describe()).collect();
        Ok(Some(Arc::new(Hub {
            node: RandomState::new().hash_one((std::process::id(), now_ns())),
            prefix: cfg.broker_channel_prefix.as_str().into(),
            shards,
            metrics: Arc::new(BrokerMetrics::new(urls)),
            stop: AtomicBool::new(false),
            threads: Mutex::default(),
            queue_bytes_max: cfg.broker_queue_bytes_max,
            pipeline_max: cfg.broker_pipeline_max,
            timeout: Duration::from_millis(cfg.broker_timeout_ms),
            poll: Duration::from_millis(cfg.broker_subscribe_poll_ms),
            reconnect_max: Duration::from_millis(cfg.broker_reconnect_max_ms),
            history: cfg.history_limits(),
        })))
    }

    /// Starts the two threads of every shard; `publisher` delivers to the local workers.
    pub(crate) fn spawn(self: &Arc<Hub>, publisher: &Publisher) -> io::Result<()> {
        let mut threads = lock(&self.threads);
        for i in 0..self.shards.len() {
            let hub = self.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ringws-bpub{i}"))
                    .spawn(move || hub.run_publisher(i))?,
            );
            let (hub, publisher) = (self.clone(), publisher.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ringws-bsub{i}"))
                    .spawn(move || hub.run_subscriber_thread(i, publisher))?,
            );
        }
        Ok(())
    }

    /// Asks every broker thread to leave.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Relaxed);
        for s in self.shards.iter() {
            let _q = lock(&s.queue);
            s.ready.notify_all();
        }
    }

    /// Waits for every broker thread (after [`Hub::stop`]).
    pub(crate) fn join(&self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    fn shard_of(&self, kind: Kind, topic: &str) -> usize {
        match kind {
            Kind::Publish => hash::shard_of(topic, self.shards.len()),
            Kind::Broadcast => 0,
        }
    }

    fn write_channel(&self, kind: Kind, topic: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix.as_bytes());
        match kind {
            Kind::Publish => {
                out.extend_from_slice(b"t.");
                out.extend_from_slice(topic.as_bytes());
            }
            Kind::Broadcast => out.push(b'b'),
        }
    }

    fn channel(&self, kind: Kind, topic: &str) -> String {
        let mut v = Vec::new();
        self.write_channel(kind, topic, &mut v);
        String::from_utf8(v).expect("prefix and topic are UTF-8")
    }

    fn target<'c>(&self, channel: &'c str) -> Option<Target<'c>> {
        let rest = channel.strip_prefix(&*self.prefix)?;
        if rest == "b" {
            return Some(Target::Broadcast);
        }
        rest.strip_prefix("t.").map(Target::Topic)
    }

    /// Queues a publish (or broadcast) for the broker; never blocks on it. Past
    /// `broker_queue_bytes_max` it is dropped and counted.
    pub(crate) fn publish(&self, kind: Kind, topic: &Arc<str>, frame: &Bytes) {
        let s = &self.shards[self.shard_of(kind, topic)];
        let cost = frame.len() + topic.len() + ENTRY_OVERHEAD_BYTES;
        let mut q = lock(&s.queue);
        if q.bytes + cost > self.queue_bytes_max {
            drop(q);
            self.metrics.publish_dropped.fetch_add(1, Relaxed);
            return;
        }
        let was_empty = q.items.is_empty();
        q.bytes += cost;
        q.items.push_back(Outgoing {
            kind,
            topic: topic.clone(),
            frame: frame.clone(),
            cost,
        });
        // Under the lock, so that the publish thread's decrement never comes first.
        self.metrics.queued.fetch_add(1, Relaxed);
        drop(q);
        if was_empty {
            s.ready.notify_one();
        }
    }

    /// Whether the broker keeps the topic history (brokers and history both on).
    pub(crate) fn keeps_history(&self) -> bool {
        self.history.is_some()
    }

    /// Queues a resume for the subscribe thread of `r.topic`'s shard; its answer comes as
    /// `Mail::Resumed` to the connection's worker.
    pub(crate) fn request_replay(&self, r: ReplayRequest) {
        let s = &self.shards[self.shard_of(Kind::Publish, &r.topic)];
        lock(&s.requests).push(r);
    }

    /// A worker's first subscriber to `topic` came (`up`) or its last left.
    pub(crate) fn demand(&self, topic: &str, up: bool) {
        let s = &self.shards[self.shard_of(Kind::Publish, topic)];
        let mut d = lock(&s.demand);
        let delta = if up { 1 } else { -1 };
        match d.get_mut(topic) {
            Some(n) => *n += delta,
            None => {
                d.insert(topic.into(), delta);
            }
        }
    }

    /// Sleeps up to `d`, waking early when the hub stops.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// Takes up to `pipeline_max` queued publishes, waiting a little for the first.
    fn take_batch(&self, s: &Shard, into: &mut Vec<Outgoing>) {
        let mut q = lock(&s.queue);
        if q.items.is_empty() && !self.stopping() {
            q = s
                .ready
                .wait_timeout(q, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let n = q.items.len().min(self.pipeline_max);
        for o in q.items.drain(..n) {
            into.push(o);
        }
        q.bytes -= into.iter().map(|o| o.cost).sum::<usize>();
        self.metrics.queued.fetch_sub(into.len() as u64, Relaxed);
    }

    // ----- the publish thread ----------------------------------------------------------------

    /// Connects whichever of the publish thread's links is down (the history link only with
    /// history on).
    fn connect_publish_links(
        &self,
        s: &Shard,
        link: &mut Option<Box<dyn PublishLink>>,
        hlink: &mut Option<Box<dyn HistoryLink>>,
    ) -> io::Result<()> {
        if link.is_none() {
            *link = Some(s.broker.connect_publisher(self.timeout)?);
        }
        if let Some(limits) = self.history
            && hlink.is_none()
        {
            *hlink = Some(s.broker.connect_history(self.timeout, limits)?);
        }
        Ok(())
    }

    fn run_publisher(&self, i: usize) {
        let s = &self.shards[i];
        let mut link: Option<Box<dyn PublishLink>> = None;
        let mut hlink: Option<Box<dyn HistoryLink>> = None;
        let mut backoff = BACKOFF_MIN;
        let mut batch = Vec::new();
        let mut seq = Sequencer::default();
        let (mut buf, mut spans, mut hspans) = (Vec::new(), Vec::new(), Vec::new());
        let mut positions = Vec::new();
        let epochs = RandomState::new();
        while !self.stopping() {
            let ready = link.is_some() && (self.history.is_none() || hlink.is_some());
            if !ready {
                match self.connect_publish_links(s, &mut link, &mut hlink) {
                    Ok(()) => {
                        backoff = BACKOFF_MIN;
                        self.metrics.set_link(i, 0, true);
                    }
                    Err(_) => {
                        self.sleep(backoff);
                        backoff = (backoff * 2).min(self.reconnect_max);
                    }
                }
                continue;
            }
            self.take_batch(s, &mut batch);
            if batch.is_empty() {
                continue;
            }
            buf.clear();
            spans.clear();
            hspans.clear();
            for (j, o) in batch.iter().enumerate() {
                let start = buf.len();
                self.write_channel(o.kind, &o.topic, &mut buf);
                let mid = buf.len();
                let (epoch, n) = seq.next(o.kind, &o.topic);
                Envelope {
                    kind: o.kind,
                    epoch,
                    origin: self.node,
                    seq: n,
                    sent_ns: now_ns(),
                }
                .write(&o.frame, &mut buf);
                if self.history.is_some() && o.kind == Kind::Publish {
                    hspans.push((j, start, mid, buf.len()));
                } else {
                    spans.push((start, mid, buf.len()));
                }
            }
            let pairs: Vec<(&[u8], &[u8])> = spans
                .iter()
                .map(|&(a, b, c)| (&buf[a..b], &buf[b..c]))
                .collect();
            let triples: Vec<(&str, &[u8], &[u8])> = hspans
                .iter()
                .map(|&(j, a, b, c)| (&*batch[j].topic, &buf[a..b], &buf[b..c]))
                .collect();
            let mut failed = false;
            for (n, res) in [
                (
                    pairs.len(),
                    (!pairs.is_empty()).then(|| link.as_mut().expect("ready").publish(&pairs)),
                ),
                (
                    triples.len(),
                    (!triples.is_empty()).then(|| {
                        positions.clear();
                        let now_ms = now_ns() / 1_000_000;
                        // A topic the history does not know (new, or Redis lost its data)
                        // starts an epoch of its own: drawn afresh for every batch, so that a
                        // history lost between two batches never reuses an epoch (48 bits, as
                        // on one node).
                        let new_epoch = epochs.hash_one((self.node, i, now_ns())) & ((1 << 48) - 1);
                        hlink.as_mut().expect("ready").publish(
                            &triples,
                            now_ms,
                            new_epoch,
                            &mut positions,
                        )
                    }),
                ),
            ] {
                match res {
                    None => {}
                    Some(Ok(())) => {
                        self.metrics.published.fetch_add(n as u64, Relaxed);
                    }
                    Some(Err(_)) => {
                        self.metrics
                            .publish_unconfirmed
                            .fetch_add(n as u64, Relaxed);
                        failed = true;
                    }
                }
            }
            drop((pairs, triples));
            batch.clear();
            if failed {
                self.metrics.reconnects.fetch_add(1, Relaxed);
                self.metrics.set_link(i, 0, false);
                link = None;
                hlink = None;
            }
        }
        self.metrics.set_link(i, 0, false);
        let mut q = lock(&s.queue);
        let left = q.items.len() as u64;
        q.items.clear();
        q.bytes = 0;
        self.metrics.queued.fetch_sub(left, Relaxed);
        drop(q);
        self.metrics.publish_dropped.fetch_add(left, Relaxed);
    }

    // ----- the subscribe thread --------------------------------------------------------------

    fn run_subscriber_thread(&self, i: usize, publisher: Publisher) {
        let mut session = Session {
            hub: self,
            shard: i,
            publisher,
            topics: HashMap::new(),
            seen: HashMap::new(),
            fresh: false,
            connected: false,
            channels: 0,
            hlink: None,
            last: HashMap::new(),
            floor: HashMap::new(),
            requests: Vec::new(),
            repair_all: false,
        };
        let mut backoff = BACKOFF_MIN;
        while !self.stopping() {
            let res = self.shards[i]
                .broker
                .run_subscriber(self.timeout, self.poll, &mut session);
            if res.is_ok() {
                break;
            }
            self.metrics.set_link(i, 1, false);
            self.metrics.channels.fetch_sub(session.channels, Relaxed);
            session.channels = 0;
            if std::mem::take(&mut session.connected) {
                self.metrics.reconnects.fetch_add(1, Relaxed);
                backoff = BACKOFF_MIN;
            }
            // The demand keeps changing while the link is down; a resume cannot be served
            // without Redis, so it is answered as a gap now rather than left waiting.
            session.fail_requests();
            session.apply_demand(&mut Vec::new(), &mut Vec::new());
            // Resumes that come during the backoff are answered too, every 20 ms.
            let end = Instant::now() + backoff;
            while !self.stopping() && Instant::now() < end {
                self.sleep(
                    Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())),
                );
                session.fail_requests();
            }
            backoff = (backoff * 2).min(self.reconnect_max);
        }
        self.metrics.set_link(i, 1, false);
        self.metrics.channels.fetch_sub(session.channels, Relaxed);
    }
}

/// Positions handed out by one publish thread: per topic (and one for broadcasts), within an
/// epoch.
#[derive(Default)]
struct Sequencer {
    epoch: u32,
    topics: HashMap<Arc<str>, u64>,
    broadcast: u64,
}

impl Sequencer {
    fn next(&mut self, kind: Kind, topic: &Arc<str>) -> (u32, u64) {
        if kind == Kind::Broadcast {
            self.broadcast += 1;
            return (self.epoch, self.broadcast);
        }
        if let Some(n) = self.topics.get_mut(topic) {
            *n += 1;
            return (self.epoch, *n);
        }
        if self.topics.len() >= SEQ_TOPICS_MAX {
            self.topics.clear();
            self.broadcast = 0;
            self.epoch = self.epoch.wrapping_add(1);
        }
        self.topics.insert(topic.clone(), 1);
        (self.epoch, 1)
    }
}

/// The subscribe thread's state, kept across reconnects.
struct Session<'h> {
    hub: &'h Hub,
    shard: usize,
    publisher: Publisher,
    /// Workers with a subscriber, by topic (only topics with ≥ 1).
    topics: HashMap<Arc<str>, i64>,
    /// The last position seen per channel and origin: (epoch, seq).
    seen: HashMap<Box<str>, HashMap<u64, (u32, u64)>>,
    /// Connected and not yet told what to subscribe.
    fresh: bool,
    connected: bool,
    /// Channels confirmed subscribed on the current link.
    channels: u64,
    /// With history in the broker: the link that replays from it (connected when needed).
    hlink: Option<Box<dyn HistoryLink>>,
    /// With history in the broker: the last position delivered to the workers, per topic.
    last: HashMap<Arc<str>, Position>,
    /// With history in the broker: for a topic with no live message delivered yet, the latest
    /// position a replay answered with. Live messages behind it still go to the workers (others
    /// may need them), but a jump past it, or a reconnect, is repaired from it.
    floor: HashMap<Arc<str>, Position>,
    /// Resumes taken from the shard, served once their channels are subscribed (`settled`).
    requests: Vec<ReplayRequest>,
    /// The subscribe link was (re)connected: what was published while it was down is fetched
    /// from the history once the channels are subscribed again.
    repair_all: bool,
}

/// Splits a message published with history (`<epoch hex> <offset> <envelope>`).
fn split_positioned(payload: &[u8]) -> Option<(Position, &[u8])> {
    let mut parts = payload.splitn(3, |&b| b == b' ');
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let offset = std::str::from_utf8(parts.next()?).ok()?;
    let rest = parts.next()?;
    let p: Position = format!("{epoch}-{offset}").parse().ok()?;
    Some((p, rest))
}

impl Session<'_> {
    /// Folds the workers' pending demand changes into `topics`; the channels that went from
    /// 0 to ≥ 1 go into `subs`, those that went to 0 into `unsubs`.
    fn apply_demand(&mut self, subs: &mut Vec<String>, unsubs: &mut Vec<String>) {
        let pending = std::mem::take(&mut *lock(&self.hub.shards[self.shard].demand));
        for (topic, delta) in pending {
            if delta == 0 {
                continue;
            }
            let before = self.topics.get(&topic).copied().unwrap_or(0);
            let after = before + delta;
            assert!(after >= 0, "more last-unsubscribes than first-subscribes");
            let channel = self.hub.channel(Kind::Publish, &topic);
            if after == 0 {
                self.topics.remove(&topic);
                self.seen.remove(channel.as_str());
                self.last.remove(&topic);
                self.floor.remove(&topic);
                // Off the channel, this node will miss messages: its history of them ends.
                self.publisher.forget_history(|t| t == &*topic);
            } else {
                self.topics.insert(topic, after);
            }
            match (before, after) {
                (0, 1..) => subs.push(channel),
                (1.., 0) => unsubs.push(channel),
                _ => {}
            }
        }
    }

    /// The link to the broker's history, connected if it was not.
    fn history_link(&mut self) -> Option<&mut Box<dyn HistoryLink>> {
        if self.hlink.is_none() {
            let limits = self.hub.history.expect("history is on");
            self.hlink = self.hub.shards[self.shard]
                .broker
                .connect_history(self.hub.timeout, limits)
                .ok();
        }
        self.hlink.as_mut()
    }

    /// Reads `topic`'s history after `after`. A link that fails is connected again and the
    /// read tried once more (the link may predate a Redis restart); None if that fails too.
    fn read_history(&mut self, topic: &str, after: Position) -> Option<StreamReplay> {
        for _ in 0..2 {
            let now_ms = now_ns() / 1_000_000;
            match self.history_link()?.replay_after(topic, after, now_ms) {
                Ok(r) => return Some(r),
                Err(_) => self.hlink = None,
            }
        }
        None
    }

    /// A message of `topic` published with history: to the workers in offset order. A gap
    /// behind it (the link skipped messages) is fetched from the history first.
    fn deliver_positioned(&mut self, topic: &str, payload: &[u8]) {
        let m = &self.hub.metrics;
        let Some((position, rest)) = split_positioned(payload) else {
            m.invalid.fetch_add(1, Relaxed);
            return;
        };
        let Some((topic, _)) = self.topics.get_key_value(topic) else {
            return; // unsubscribed since: not owed to anyone here
        };
        let topic = topic.clone();
        match self.last.get(&topic) {
            Some(&last) if last.epoch == position.epoch => {
                if position.offset <= last.offset {
                    m.stale.fetch_add(1, Relaxed);
                    return;
                }
                if position.offset > last.offset + 1 {
                    self.repair(&topic, last, Some(position));
                }
            }
            Some(_) => {}
            None => {
                if let Some(&floor) = self.floor.get(&topic)
                    && floor.epoch == position.epoch
                    && position.offset > floor.offset + 1
                {
                    self.repair(&topic, floor, Some(position));
                }
            }
        }
        if self.post_positioned(&topic, position, rest, true) {
            self.last.insert(topic.clone(), position);
            self.floor.remove(&topic);
        }
    }

    /// Fetches what `topic` had after `after` (up to, not including, `upto`; everything when
    /// None) and delivers it; what the history no longer holds is counted lost.
    fn repair(&mut self, topic: &Arc<str>, after: Position, upto: Option<Position>) -> bool {
        let replay = self.read_history(topic, after);
        let answered = replay.is_some();
        let mut got = 0u64;
        // A reconnect's repair (no `upto`) of the same epoch: what the stream no longer holds
        // between `after` and its first message is lost.
        let trimmed = match (&replay, upto) {
            (Some(r), None) if r.gap && r.last.is_some_and(|l| l.epoch == after.epoch) => {
                let first = r
                    .messages
                    .first()
                    .map_or(r.last.map_or(0, |l| l.offset + 1), |(p, _)| p.offset);
                first.saturating_sub(after.offset + 1)
            }
            _ => 0,
        };
        for (p, bytes) in replay.iter().flat_map(|r| &r.messages) {
            if upto.is_some_and(|u| p.epoch != u.epoch || p.offset >= u.offset) {
                break;
            }
            if self.post_positioned(topic, *p, bytes, false) {
                self.last.insert(topic.clone(), *p);
                self.floor.remove(topic);
                got += 1;
            }
        }
        let m = &self.hub.metrics;
        m.repaired.fetch_add(got, Relaxed);
        m.lost.fetch_add(trimmed, Relaxed);
        if let Some(u) = upto {
            m.lost
                .fetch_add((u.offset - after.offset - 1).saturating_sub(got), Relaxed);
        }
        answered
    }

    /// One message of the history to every local worker, positioned; false if it is not one.
    fn post_positioned(
        &self,
        topic: &Arc<str>,
        position: Position,
        env: &[u8],
        live: bool,
    ) -> bool {
        let m = &self.hub.metrics;
        let Ok((e, text, body)) = Envelope::read(env) else {
            m.invalid.fetch_add(1, Relaxed);
            return false;
        };
        if e.kind != Kind::Publish {
            m.invalid.fetch_add(1, Relaxed);
            return false;
        }
        if live {
            let hop_us = now_ns().saturating_sub(e.sent_ns) / 1000;
            let _ = lock(&m.hop_us).record(hop_us.clamp(1, HOP_US_MAX));
        }
        let plain = Bytes::copy_from_slice(&env[HEADER_BYTES..]);
        let frame = self.publisher.frame_of_plain(plain, text, body);
        m.received.fetch_add(1, Relaxed);
        self.publisher
            .deliver_positioned(topic.clone(), frame, position, text, body);
        true
    }

    /// Answers every resume waiting (queued or taken) as a gap: the link to Redis is down.
    fn fail_requests(&mut self) {
        self.requests
            .append(&mut lock(&self.hub.shards[self.shard].requests));
        for r in std::mem::take(&mut self.requests) {
            self.answer(r, Vec::new(), None, true);
        }
    }

    /// Posts a resume's answer to its worker (and counts it).
    fn answer(&self, r: ReplayRequest, frames: Vec<Frame>, last: Option<Position>, gap: bool) {
        let m = &self.hub.metrics;
        m.replays.fetch_add(1, Relaxed);
        m.replay_gaps.fetch_add(u64::from(gap), Relaxed);
        self.publisher
            .mailbox(r.id.worker())
            .post(crate::handler::Mail::Resumed {
                id: r.id,
                topic: r.topic,
                req: r.req,
                frames,
                last,
                gap,
            });
    }

    /// Answers one resume from the history: the frames after its position, the topic's latest
    /// position (live messages at or before it are skipped), and whether there was a gap.
    fn serve_replay(&mut self, r: ReplayRequest) -> bool {
        let replay = self.read_history(&r.topic, r.from);
        let answered = replay.is_some();
        let m = &self.hub.metrics;
        let (mut frames, mut gap, mut last) = (Vec::new(), true, None);
        if let Some(replay) = replay {
            gap = replay.gap;
            last = replay.last;
            for (p, bytes) in &replay.messages {
                match Envelope::read(bytes) {
                    Ok((e, text, body)) if e.kind == Kind::Publish => {
                        let plain = &bytes[HEADER_BYTES..];
                        frames.push(self.publisher.positioned_of_plain(*p, plain, text, body));
                    }
                    _ => {
                        m.invalid.fetch_add(1, Relaxed);
                        gap = true;
                    }
                }
            }
        }
        if let Some(l) = last
            && !self.last.contains_key(&r.topic)
            && self.topics.contains_key(&r.topic)
        {
            let f = self.floor.entry(r.topic.clone()).or_insert(l);
            if f.epoch != l.epoch || f.offset < l.offset {
                *f = l;
            }
        }
        self.answer(r, frames, last, gap);
        answered
    }

    fn account(&mut self, channel: &str, env: &Envelope) -> bool {
        let per = match self.seen.get_mut(channel) {
            Some(p) => p,
            None => self.seen.entry(channel.into()).or_default(),
        };
        match per.get_mut(&env.origin) {
            Some((epoch, seq)) if *epoch == env.epoch => {
                if env.seq <= *seq {
                    self.hub.metrics.stale.fetch_add(1, Relaxed);
                    return false;
                }
                let lost = env.seq - *seq - 1;
                self.hub.metrics.lost.fetch_add(lost, Relaxed);
                *seq = env.seq;
                if lost > 0
                    && let Some(Target::Topic(t)) = self.hub.target(channel)
                {
                    self.publisher.forget_history(|h| h == t);
                }
            }
            Some(p) => *p = (env.epoch, env.seq),
            None => {
                per.insert(env.origin, (env.epoch, env.seq));
            }
        }
        true
    }
}

impl SubscribeSession for Session<'_> {
    fn connected(&mut self) {
        self.fresh = true;
        self.connected = true;
        self.repair_all =
            self.hub.keeps_history() && !(self.last.is_empty() && self.floor.is_empty());
        // While the link was down this node may have missed messages of this shard's topics.
        let (hub, shard) = (self.hub, self.shard);
        self.publisher
            .forget_history(|t| hub.shard_of(Kind::Publish, t) == shard);
        self.hub.metrics.set_link(self.shard, 1, true);
    }

    fn changes(&mut self, subs: &mut Vec<String>, unsubs: &mut Vec<String>) -> bool {
        if self.hub.stopping() {
            return true;
        }
        // Requests before demand: a request's demand change was queued before it.
        self.requests
            .append(&mut lock(&self.hub.shards[self.shard].requests));
        self.apply_demand(subs, unsubs);
        if std::mem::take(&mut self.fresh) {
            subs.clear();
            unsubs.clear();
            subs.extend(
                self.topics
                    .keys()
                    .map(|t| self.hub.channel(Kind::Publish, t)),
            );
            if self.shard == self.hub.shard_of(Kind::Broadcast, "") {
                subs.push(self.hub.channel(Kind::Broadcast, ""));
            }
        }
        false
    }

    fn subscribed(&mut self, subscribed: usize, unsubscribed: usize) {
        let m = &self.hub.metrics;
        m.channels.fetch_add(subscribed as u64, Relaxed);
        m.channels.fetch_sub(unsubscribed as u64, Relaxed);
        self.channels = self.channels + subscribed as u64 - unsubscribed as u64;
    }

    fn settled(&mut self) {
        if !self.hub.keeps_history() || (self.requests.is_empty() && !self.repair_all) {
            return;
        }
        // Redis failing once in this pass: the rest is answered without it (a gap) rather
        // than each waiting out its own timeout while the link's messages pile up.
        let mut up = true;
        if std::mem::take(&mut self.repair_all) {
            let mut topics: Vec<(Arc<str>, Position)> =
                self.last.iter().map(|(t, p)| (t.clone(), *p)).collect();
            topics.extend(
                self.floor
                    .iter()
                    .filter(|(t, _)| !self.last.contains_key(*t))
                    .map(|(t, p)| (t.clone(), *p)),
            );
            for (topic, after) in topics {
                if !self.repair(&topic, after, None) {
                    up = false;
                    break;
                }
            }
        }
        for r in std::mem::take(&mut self.requests) {
            if up {
                up = self.serve_replay(r);
            } else {
                self.answer(r, Vec::new(), None, true);
            }
        }
    }

    fn deliver(&mut self, channel: &str, payload: &[u8]) {
        let m = &self.hub.metrics;
        if self.hub.keeps_history()
            && let Some(Target::Topic(t)) = self.hub.target(channel)
        {
            return self.deliver_positioned(t, payload);
        }
        let Ok((env, text, body)) = Envelope::read(payload) else {
            m.invalid.fetch_add(1, Relaxed);
            return;
        };
        if env.origin == self.hub.node {
            return; // our own publish: delivered locally when it was made
        }
        let hub = self.hub;
        let topic = match hub.target(channel) {
            Some(Target::Topic(t)) if env.kind == Kind::Publish => {
                match self.topics.get_key_value(t) {
                    Some((t, _)) => Some(t.clone()),
                    None => return, // unsubscribed since: not owed to anyone here
                }
            }
            Some(Target::Broadcast) if env.kind == Kind::Broadcast => None,
            _ => {
                m.invalid.fetch_add(1, Relaxed);
                return;
            }
        };
        if !self.account(channel, &env) {
            return;
        }
        let hop_us = now_ns().saturating_sub(env.sent_ns) / 1000;
        let _ = lock(&m.hop_us).record(hop_us.clamp(1, HOP_US_MAX));
        let plain = Bytes::copy_from_slice(&payload[HEADER_BYTES..]);
        let frame = self.publisher.frame_of_plain(plain, text, body);
        m.received.fetch_add(1, Relaxed);
        match topic {
            Some(t) => self.publisher.deliver_publish(t, frame, text, body),
            None => self.publisher.deliver_broadcast(frame),
        }
    }
}
