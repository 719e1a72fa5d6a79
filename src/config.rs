//! Every limit of ringws in one place, validated once at start-up.
//!
//! Names carry their unit last (`_ms`, `_bytes`, `_max`). The defaults are what a production server
//! facing the Internet should start with; the tests shrink them to make timers fire quickly.

use std::fmt;
use std::path::PathBuf;

/// Default of [`Config::frame_bytes_max`].
pub const FRAME_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;
/// Default of [`Config::message_bytes_max`].
pub const MESSAGE_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;
/// Default of [`Config::message_fragments_max`].
pub const MESSAGE_FRAGMENTS_MAX_DEFAULT: u32 = 1 << 20;

/// Default of [`Config::deflate_compress_bytes_min`] (see docs/BENCHMARKS.md, permessage-deflate).
pub const DEFLATE_COMPRESS_BYTES_MIN_DEFAULT: usize = 256;
/// Default of [`Config::deflate_level`] (see docs/BENCHMARKS.md, permessage-deflate).
pub const DEFLATE_LEVEL_DEFAULT: u8 = 1;

/// Default of [`Config::send_queue_high_bytes`] (see docs/BENCHMARKS.md, backpressure).
pub const SEND_QUEUE_HIGH_BYTES_DEFAULT: usize = 1024 * 1024;
/// Default of [`Config::send_queue_low_bytes`].
pub const SEND_QUEUE_LOW_BYTES_DEFAULT: usize = 256 * 1024;

/// What to do when a connection's send queue is over `send_queue_bytes_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackpressurePolicy {
    /// Close the connection with 1008 (policy violation). The default: a peer that does not read
    /// must not make the server hold unbounded memory.
    Close,
    /// Drop the message for this connection only and count it; the connection stays open.
    Drop,
}

/// One certificate chain and its key, named by the files they come from (read at start-up and
/// again on every reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `wss://`: the port then speaks TLS only (1.3 and 1.2, ALPN `http/1.1`, session tickets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate for clients whose SNI names none of `sni` (or that send no SNI).
    pub default: TlsCertFiles,
    /// Certificates chosen by the SNI name the client asks for (exact, case-insensitive).
    pub sni: Vec<(String, TlsCertFiles)>,
}

impl TlsSettings {
    /// One certificate for every client.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsSettings {
        TlsSettings {
            default: TlsCertFiles {
                cert: cert.into(),
                key: key.into(),
            },
            sni: Vec::new(),
        }
    }
}

/// All limits and timings of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker threads, each with its own ring and listener. Default: number of cores.
    pub workers: usize,
    /// Size of each worker's fixed-file (direct descriptor) table, i.e. its connection limit.
    pub connections_per_worker_max: u32,
    /// Listen backlog passed to listen(2).
    pub listen_backlog: u32,
    /// Largest handshake request header block, in bytes (431 past it).
    pub handshake_header_bytes_max: usize,
    /// Time a client has to complete its upgrade request.
    pub handshake_timeout_ms: u64,
    /// Handshakes a worker keeps in progress at once; past it, new connections are refused (503).
    pub handshakes_pending_per_worker_max: u32,
    /// A connection with no bytes received for this long is sent a ping (plus a fixed
    /// per-connection spread of up to an eighth of it, so that heartbeats do not come in waves).
    pub ping_interval_ms: u64,
    /// After a heartbeat ping, the peer must send something (a pong or anything) within this time.
    pub pong_timeout_ms: u64,
    /// After our Close frame went out, the peer has this long to answer before TCP is closed.
    pub close_timeout_ms: u64,
    /// Largest payload of a single frame (1009 past it).
    pub frame_bytes_max: u64,
    /// Largest message, summed over its fragments (1009 past it).
    pub message_bytes_max: u64,
    /// Most fragments (frames) in one message (1009 past it).
    pub message_fragments_max: u32,
    /// Bytes queued for sending on one connection before backpressure applies: past it the
    /// connection is closed with 1008 (or the message dropped, by `backpressure`). Reading pauses
    /// long before (`send_queue_high_bytes`), so only what the connection does not control
    /// (broadcasts, publishes, sends from other connections) can reach it.
    pub send_queue_bytes_max: usize,
    /// High-water mark: once a connection's queued output passes it, the server stops reading
    /// from that connection (its multishot receive is cancelled), so TCP's flow control slows
    /// the peer down and nothing more is buffered for it. Covers echoes, everything a handler
    /// sends from `on_message`, inflated messages and pongs.
    pub send_queue_high_bytes: usize,
    /// Low-water mark: a connection whose reading paused at the high mark is read again once its
    /// queued output is below this.
    pub send_queue_low_bytes: usize,
    /// The memory budget of the whole server: every byte the engine buffers (send queues,
    /// reassembly, inflate output, handshake spill, shared frames, the workers' pools) is
    /// counted against it. Past half of it, reading pauses on the connections that hold more
    /// than a receive buffer; if the count stays past 3/4 of it for `memory_budget_grace_ms`,
    /// the connections holding the most are closed with 1013, largest first. The last quarter
    /// is left for what is not counted (the allocator's slack, the program), so that the
    /// process's RSS stays within the budget. 0 (the default): half of the machine's memory
    /// (`MemTotal`, read once at start-up).
    pub memory_budget_bytes: u64,
    /// How long the count may stay past 3/4 of the budget, with reading paused, before
    /// connections are closed. Connections held for the budget are also released after it once
    /// the count is below half of the budget, and the largest closed after eight of it while the
    /// count stays past 3/8 with connections held (a stall: nothing frees by itself).
    pub memory_budget_grace_ms: u64,
    /// glibc's mmap threshold, fixed at start-up (`mallopt(M_MMAP_THRESHOLD)`): allocations of
    /// at least this many bytes are mappings of their own, given back to the kernel as soon as
    /// they are freed, so that memory returns after large messages. Fixing it also stops glibc
    /// from raising it after large frees, which leaves large buffers in fragmented heaps. It is
    /// process-wide; 0 leaves the allocator alone (for an embedder that tunes it itself).
    pub allocator_mmap_threshold_bytes: usize,
    /// What happens past `send_queue_bytes_max`.
    pub backpressure: BackpressurePolicy,
    /// Size of one receive buffer in the provided-buffer ring.
    pub recv_buffer_bytes: u32,
    /// Number of receive buffers per worker (a power of two).
    pub recv_buffers_per_worker: u16,
    /// A connection's fair share of reading: its armed receive ends after this many bytes and
    /// is armed again, behind every other connection with input waiting. So one client's few
    /// bytes never wait behind everything a thousand flooding clients have sent (without it
    /// the kernel serves each of those up to 32 buffers per round). 0 leaves reads uncapped; a
    /// share below `recv_buffer_bytes` counts as one buffer (the kernel checks the limit after
    /// each buffer, so a share may end up to one buffer past it). Needs Linux 6.16 (ignored
    /// before, with a log line).
    pub recv_share_bytes: u32,
    /// Size of one registered (fixed) send buffer. A connection's own frames (echoes, pongs,
    /// closes) are written into one while they fit and sent with one `WRITE_FIXED`.
    pub send_buffer_bytes: u32,
    /// Registered send buffers per worker, allocated and pinned once (two per busy connection;
    /// a connection without one sends from the heap by `sendmsg`). 0 disables them.
    pub send_buffers_per_worker: u16,
    /// Batches of at least this many bytes are sent with SENDMSG_ZC (zero copy); 0 disables it.
    /// Off by default: on loopback it measured slower than a copying send; it may pay on a NIC
    /// for large payloads.
    pub send_zc_bytes_min: usize,
    /// Submission queue entries per ring.
    pub ring_entries: u32,
    /// Allowed `Origin` values; empty means any Origin (or none) is accepted. Others get 403.
    pub origins_allowed: Vec<String>,
    /// Pin worker i to core i mod cores.
    pub pin_workers: bool,
    /// Negotiate permessage-deflate (RFC 7692) when a client offers it. The server always
    /// compresses without context takeover (one compressor per worker; a broadcast is
    /// compressed once), so an idle connection holds no zlib state.
    pub deflate: bool,
    /// Let clients keep their LZ77 window across messages. Off by default: each such connection
    /// then holds its own inflater (~46 KiB) for its whole life, which a million connections
    /// cannot afford; off, ringws answers `client_no_context_takeover` and inflates every
    /// client message with one inflater per worker.
    pub deflate_client_context_takeover: bool,
    /// With client context takeover, the largest client window (8–15) ringws asks for when
    /// the offer allows it. (With zlib-rs the inflater's size does not depend on it: 46 KiB.)
    pub deflate_client_window_bits_max: u8,
    /// Messages shorter than this are sent uncompressed (RSV1 clear) even to a connection that
    /// agreed to deflate: below it, compressing costs more CPU than the bytes it saves.
    pub deflate_compress_bytes_min: usize,
    /// zlib compression level for sent messages, 0–9.
    pub deflate_level: u8,
    /// Messages of history kept per topic, for resume (`Conn::subscribe_from`, `psub` in the
    /// pubsub mode): every publish then gets a position. 0 (the default) turns history off, and
    /// then it costs nothing. With `brokers`, the history is kept in the brokers (Redis
    /// Streams, one for every node: see docs/PUBSUB.md) and this node holds none.
    pub history_messages_max: usize,
    /// History older than this is dropped (0: kept whatever its age, within the count).
    pub history_age_max_ms: u64,
    /// Topics that keep a history at once on this node (no bound applies in the brokers).
    /// Past it, histories emptied by age go first, then the one with the oldest latest
    /// message; its subscribers are told of a gap when they resume.
    pub history_topics_max: usize,
    /// With the history in the brokers: resumes a worker has asked of them and not yet had
    /// answered. Past it a resume is answered as a gap at once (each answer is up to
    /// `history_messages_max` messages framed on arrival, so this bounds that memory).
    pub history_resumes_pending_per_worker_max: usize,
    /// Serve `wss://` with these certificates (None: plain `ws://`). SIGHUP reloads them
    /// (`ringws::run_until_signal`); a file that does not load is refused and the old
    /// certificates stay.
    pub tls: Option<TlsSettings>,
    /// Redis servers (`redis://HOST:PORT`) that carry publishes and broadcasts between nodes;
    /// topics are spread over them by a consistent hash, broadcasts go to the first. Empty:
    /// this node alone. Every node of a cluster must list the same servers in the same order.
    pub brokers: Vec<String>,
    /// Prefix of every broker channel: `PREFIX t.TOPIC` for a topic, `PREFIX b` for
    /// broadcasts. Clusters sharing one Redis need different prefixes.
    pub broker_channel_prefix: String,
    /// Bytes of publishes (frames, plus 64 per entry) a node queues per broker while Redis is
    /// slow or unreachable; past it a publish is dropped for the other nodes and counted
    /// (`ringws_broker_publish_dropped_total`). Local subscribers still get it.
    pub broker_queue_bytes_max: usize,
    /// Publishes sent to Redis in one pipeline at most.
    pub broker_pipeline_max: usize,
    /// Connect, read and write timeout of a broker connection.
    pub broker_timeout_ms: u64,
    /// Longest wait between two reconnection attempts (the wait starts at 50 ms and doubles).
    pub broker_reconnect_max_ms: u64,
    /// How often the subscribe thread stops waiting for messages to apply subscription
    /// changes: a node's first subscriber to a topic is subscribed on the broker within it.
    pub broker_subscribe_poll_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            connections_per_worker_max: 19_000,
            listen_backlog: 4096,
            handshake_header_bytes_max: 8 * 1024,
            handshake_timeout_ms: 10_000,
            handshakes_pending_per_worker_max: 4096,
            ping_interval_ms: 30_000,
            pong_timeout_ms: 10_000,
            close_timeout_ms: 5_000,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            message_bytes_max: MESSAGE_BYTES_MAX_DEFAULT,
            message_fragments_max: MESSAGE_FRAGMENTS_MAX_DEFAULT,
            send_queue_bytes_max: 32 * 1024 * 1024,
            send_queue_high_bytes: SEND_QUEUE_HIGH_BYTES_DEFAULT,
            send_queue_low_bytes: SEND_QUEUE_LOW_BYTES_DEFAULT,
            memory_budget_bytes: 0,
            memory_budget_grace_ms: 250,
            allocator_mmap_threshold_bytes: 128 * 1024,
            backpressure: BackpressurePolicy::Close,
            recv_buffer_bytes: 16 * 1024,
            recv_buffers_per_worker: 1024,
            recv_share_bytes: 32 * 1024,
            send_buffer_bytes: 16 * 1024,
            send_buffers_per_worker: 256,
            send_zc_bytes_min: 0,
            ring_entries: 4096,
            origins_allowed: Vec::new(),
            pin_workers: true,
            deflate: true,
            deflate_client_context_takeover: false,
            deflate_client_window_bits_max: 15,
            deflate_compress_bytes_min: DEFLATE_COMPRESS_BYTES_MIN_DEFAULT,
            deflate_level: DEFLATE_LEVEL_DEFAULT,
            history_messages_max: 0,
            history_age_max_ms: 0,
            history_topics_max: 100_000,
            history_resumes_pending_per_worker_max: 256,
            tls: None,
            brokers: Vec::new(),
            broker_channel_prefix: "ringws:".into(),
            broker_queue_bytes_max: 64 * 1024 * 1024,
            broker_pipeline_max: 256,
            broker_timeout_ms: 2_000,
            broker_reconnect_max_ms: 2_000,
            broker_subscribe_poll_ms: 10,
        }
    }
}

/// A configuration that cannot work, with the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config.{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

fn check(ok: bool, field: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError {
            field,
            reason: reason.into(),
        })
    }
}

impl Config {
    /// Checks every limit once, at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.workers >= 1 && self.workers <= 1024,
            "workers",
            "must be 1..=1024",
        )?;
        check(
            self.connections_per_worker_max >= 1,
            "connections_per_worker_max",
            "must be at least 1",
        )?;
        check(
            self.handshake_header_bytes_max >= 256,
            "handshake_header_bytes_max",
            "must be at least 256",
        )?;
        check(
            self.handshake_timeout_ms > 0,
            "handshake_timeout_ms",
            "must be > 0",
        )?;
        check(self.ping_interval_ms > 0, "ping_interval_ms", "must be > 0")?;
        check(self.pong_timeout_ms > 0, "pong_timeout_ms", "must be > 0")?;
        check(self.close_timeout_ms > 0, "close_timeout_ms", "must be > 0")?;
        check(
            self.frame_bytes_max >= 125,
            "frame_bytes_max",
            "must be at least 125",
        )?;
        check(
            self.message_bytes_max >= self.frame_bytes_max.min(125),
            "message_bytes_max",
            "must be at least 125",
        )?;
        check(
            self.message_fragments_max >= 1,
            "message_fragments_max",
            "must be at least 1",
        )?;
        check(
            self.send_queue_bytes_max >= 1024,
            "send_queue_bytes_max",
            "must be at least 1024",
        )?;
        check(
            self.send_queue_high_bytes <= self.send_queue_bytes_max,
            "send_queue_high_bytes",
            "must be at most send_queue_bytes_max",
        )?;
        check(
            self.send_queue_low_bytes < self.send_queue_high_bytes,
            "send_queue_low_bytes",
            "must be below send_queue_high_bytes",
        )?;
        check(
            self.recv_buffer_bytes >= 512 && self.recv_buffer_bytes <= 1 << 20,
            "recv_buffer_bytes",
            "must be 512..=1 MiB",
        )?;
        check(
            self.recv_buffers_per_worker.is_power_of_two()
                && self.recv_buffers_per_worker <= 1 << 15,
            "recv_buffers_per_worker",
            "must be a power of two, at most 32768",
        )?;
        check(
            self.send_buffer_bytes >= 1024,
            "send_buffer_bytes",
            "must be at least 1024",
        )?;
        check(
            self.ring_entries.is_power_of_two() && self.ring_entries >= 64,
            "ring_entries",
            "must be a power of two, at least 64",
        )?;
        check(self.deflate_level <= 9, "deflate_level", "must be 0..=9")?;
        check(
            self.history_topics_max >= 1,
            "history_topics_max",
            "must be at least 1",
        )?;
        check(
            self.history_resumes_pending_per_worker_max >= 1,
            "history_resumes_pending_per_worker_max",
            "must be at least 1",
        )?;
        check(
            (8..=15).contains(&self.deflate_client_window_bits_max),
            "deflate_client_window_bits_max",
            "must be 8..=15",
        )?;
        check(
            self.broker_pipeline_max >= 1,
            "broker_pipeline_max",
            "must be at least 1",
        )?;
        check(
            self.broker_timeout_ms > 0 && self.broker_subscribe_poll_ms > 0,
            "broker_timeout_ms",
            "broker_timeout_ms and broker_subscribe_poll_ms must be > 0",
        )?;
        check(
            self.broker_reconnect_max_ms >= 50,
            "broker_reconnect_max_ms",
            "must be at least 50",
        )?;
        for url in &self.brokers {
            check(
                url.starts_with("redis://") || url.starts_with("unix://"),
                "brokers",
                format!("{url}: expected redis://HOST:PORT"),
            )?;
        }
        Ok(())
    }

    /// The per-topic history limits, or `None` when history is off.
    pub fn history_limits(&self) -> Option<crate::history::HistoryLimits> {
        (self.history_messages_max > 0).then_some(crate::history::HistoryLimits {
            messages_max: self.history_messages_max,
            age_max_ms: self.history_age_max_ms,
        })
    }

    /// What the handshake may agree to for permessage-deflate.
    pub fn deflate_policy(&self) -> crate::proto::deflate::DeflatePolicy {
        crate::proto::deflate::DeflatePolicy {
            enabled: self.deflate,
            client_context_takeover: self.deflate_client_context_takeover,
            client_window_bits_max: self.deflate_client_window_bits_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn protocol_limits_default_to_the_config_defaults() {
        use crate::proto::connection::Limits;
        assert_eq!(Limits::default(), Limits::from_config(&Config::default()));
    }

    #[test]
    fn bad_values_are_named() {
        let c = Config {
            recv_buffers_per_worker: 1000,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "recv_buffers_per_worker");
        let c = Config {
            workers: 0,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "workers");
        let c = Config {
            ping_interval_ms: 0,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "ping_interval_ms");
    }
}
