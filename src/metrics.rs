//! Counters: one set per worker (relaxed atomics, written only by that worker), summed when
//! `/metrics` is rendered in the Prometheus text format.
//!
//! | name | type | meaning |
//! |------|------|---------|
//! | `ringws_connections{state}` | gauge | connections by state: `handshaking`, `open`, `closing` |
//! | `ringws_messages_received_total` | counter | whole data messages received |
//! | `ringws_messages_sent_total` | counter | data messages queued for sending (fanout counts each copy) |
//! | `ringws_bytes_received_total` | counter | bytes read from sockets |
//! | `ringws_bytes_sent_total` | counter | bytes written to sockets |
//! | `ringws_closes_total{code}` | counter | ended WebSocket connections by reported close code |
//! | `ringws_backpressure_drops_total` | counter | messages dropped because a send queue was full |
//! | `ringws_backpressure_closes_total` | counter | connections closed (1008) because a send queue was full |
//! | `ringws_http_responses_total{status}` | counter | non-101 HTTP answers (4xx, 503, 200 for /metrics) |
//! | `ringws_sends_total` | counter | socket sends submitted |
//! | `ringws_sends_fixed_total` | counter | sends written from registered (fixed) buffers |
//! | `ringws_deflate_connections` | gauge | open connections that agreed to permessage-deflate |
//! | `ringws_messages_deflated_total` | counter | sent messages that went out compressed (a shared frame counts once per recipient) |
//! | `ringws_messages_inflated_total` | counter | received messages that arrived compressed |
//! | `ringws_tls_handshakes_total` | counter | TLS handshakes completed |
//! | `ringws_tls_resumed_total` | counter | TLS handshakes that resumed a session (ticket) |
//! | `ringws_tls_errors_total` | counter | connections ended by bad TLS input (alert sent when rustls had one) |
//! | `ringws_tls_plaintext_http_total` | counter | plaintext HTTP requests on the TLS port (answered 400) |
//! | `ringws_tls_handshake_timeouts_total` | counter | TLS handshakes unfinished at `handshake_timeout_ms` |
//! | `ringws_tls_refused_total` | counter | TLS connections closed unanswered past the connection or pending-handshake limit |
//! | `ringws_tls_close_notify_received_total` | counter | close_notify alerts received |
//! | `ringws_fixed_files_in_use` | gauge | direct descriptors (fixed-file slots) in use |
//! | `ringws_slab_slots` | gauge | connection slots in use in the slabs |
//! | `ringws_workers` | gauge | worker threads |
//! | `ringws_broker_*` | | with `Config::brokers` only: link states, publishes acknowledged, dropped, unconfirmed, messages received and lost, the broker hop's latency ([`crate::broker::BrokerMetrics`]) |
//! | `ringws_reads_paused` | gauge | connections whose reading is paused (queued output past the high mark) |
//! | `ringws_reads_pauses_total` | counter | times a connection's reading was paused |
//! | `ringws_memory_budget_bytes` | gauge | the memory budget |
//! | `ringws_memory_used_bytes` | gauge | bytes buffered by the engine, counted against the budget |
//! | `ringws_memory_budget_closes_total` | counter | connections closed 1013 because the budget stayed exceeded |
//! | `ringws_history_topics` | gauge | with history on: topics whose history is held |
//! | `ringws_history_resumes_total`, `ringws_history_gaps_total` | counter | resumes from a position, and those that were a gap |
//! | `ringws_history_evicted_total`, `ringws_history_forgotten_total` | counter | topic histories dropped at `history_topics_max`, or because the node may have missed messages |

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Close codes counted by name; anything else is counted as `other`.
pub const CLOSE_CODES: [u16; 13] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
];
/// HTTP statuses counted by name; anything else is counted as `other`.
pub const HTTP_STATUSES: [u16; 10] = [200, 400, 401, 403, 404, 405, 408, 426, 431, 503];

/// The counters of one worker.
#[derive(Default)]
pub struct WorkerMetrics {
    pub handshaking: AtomicU64,
    pub open: AtomicU64,
    pub closing: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    closes: [AtomicU64; CLOSE_CODES.len() + 1],
    http: [AtomicU64; HTTP_STATUSES.len() + 1],
    pub backpressure_drops: AtomicU64,
    pub backpressure_closes: AtomicU64,
    pub fixed_files: AtomicU64,
    /// Sends submitted, and those of them written from registered (fixed) buffers.
    pub sends: AtomicU64,
    pub sends_fixed: AtomicU64,
    pub slab_slots: AtomicU64,
    /// Open connections with permessage-deflate agreed.
    pub deflate_connections: AtomicU64,
    pub messages_deflated: AtomicU64,
    pub messages_inflated: AtomicU64,
    /// TLS handshakes completed, and those of them resumed (session ticket).
    pub tls_handshakes: AtomicU64,
    pub tls_resumed: AtomicU64,
    /// Connections ended by bad TLS input (an alert was sent when rustls had one).
    pub tls_errors: AtomicU64,
    /// Plaintext HTTP requests on the TLS port (answered 400, closed).
    pub tls_plaintext_http: AtomicU64,
    /// TLS handshakes not finished within `handshake_timeout_ms`.
    pub tls_handshake_timeouts: AtomicU64,
    /// TLS connections refused past a limit (closed without a handshake: no 503 can be sent).
    pub tls_refused: AtomicU64,
    /// close_notify alerts received.
    pub tls_close_notify_received: AtomicU64,
    /// Connections whose reading is paused now, and pauses so far.
    pub reads_paused: AtomicU64,
    pub reads_pauses: AtomicU64,
}

/// Adds `n` to a counter. Every counter of a `WorkerMetrics` has one writer, its worker, so a
/// plain load and store is enough (readers see some recent value); a locked read-modify-write
/// here cost 7.5 % of the server's CPU in the N² broadcast (docs/PERFORMANCE.md).
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Subtracts 1 from a gauge (one writer, like [`add`]).
pub fn dec(c: &AtomicU64) {
    let before = c.load(Relaxed);
    debug_assert!(before > 0, "gauge went below zero");
    c.store(before.wrapping_sub(1), Relaxed);
}

impl WorkerMetrics {
    /// Counts one ended connection under its close code.
    pub fn close(&self, code: u16) {
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len());
        add(&self.closes[i], 1);
    }

    /// Counts one non-101 HTTP answer.
    pub fn http(&self, status: u16) {
        let i = HTTP_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(HTTP_STATUSES.len());
        add(&self.http[i], 1);
    }
}

/// The counters of all workers.
pub struct Metrics {
    pub workers: Vec<Arc<WorkerMetrics>>,
    /// The broker's counters, when the node has brokers (`Config::brokers`).
    pub broker: Option<Arc<crate::broker::BrokerMetrics>>,
    /// The server's memory budget and its use.
    pub memory: Option<Arc<crate::runtime::budget::MemoryBudget>>,
    /// The topics' history, when it is on (`Config::history_messages_max`).
    pub(crate) history: Option<Arc<crate::topics::HistoryStore>>,
}

fn sum(ws: &[Arc<WorkerMetrics>], f: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
    ws.iter().map(|w| f(w).load(Relaxed)).sum()
}

fn labelled(out: &mut String, name: &str, label: &str, value: &str, n: u64) {
    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl Metrics {
    /// A total of one counter over all workers (for tests and embedders).
    pub fn total(&self, f: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
        sum(&self.workers, f)
    }

    /// Ended connections with close code `code` over all workers.
    pub fn closes_with(&self, code: u16) -> u64 {
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len());
        self.workers.iter().map(|w| w.closes[i].load(Relaxed)).sum()
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let ws = &self.workers;
        let mut out = String::with_capacity(2048);
        header(
            &mut out,
            "ringws_connections",
            "gauge",
            "Connections by state.",
        );
        labelled(
            &mut out,
            "ringws_connections",
            "state",
            "handshaking",
            sum(ws, |w| &w.handshaking),
        );
        labelled(
            &mut out,
            "ringws_connections",
            "state",
            "open",
            sum(ws, |w| &w.open),
        );
        labelled(
            &mut out,
            "ringws_connections",
            "state",
            "closing",
            sum(ws, |w| &w.closing),
        );
        let counters: [(&str, &str, u64); 18] = [
            (
                "ringws_tls_handshakes_total",
                "TLS handshakes completed.",
                sum(ws, |w| &w.tls_handshakes),
            ),
            (
                "ringws_tls_resumed_total",
                "TLS handshakes that resumed a session.",
                sum(ws, |w| &w.tls_resumed),
            ),
            (
                "ringws_tls_errors_total",
                "Connections ended by bad TLS input.",
                sum(ws, |w| &w.tls_errors),
            ),
            (
                "ringws_tls_plaintext_http_total",
                "Plaintext HTTP requests on the TLS port.",
                sum(ws, |w| &w.tls_plaintext_http),
            ),
            (
                "ringws_tls_handshake_timeouts_total",
                "TLS handshakes unfinished at the handshake timeout.",
                sum(ws, |w| &w.tls_handshake_timeouts),
            ),
            (
                "ringws_tls_refused_total",
                "TLS connections closed unanswered past a limit.",
                sum(ws, |w| &w.tls_refused),
            ),
            (
                "ringws_tls_close_notify_received_total",
                "close_notify alerts received.",
                sum(ws, |w| &w.tls_close_notify_received),
            ),
            (
                "ringws_reads_pauses_total",
                "Times reading from a connection paused (queued output past the high mark).",
                sum(ws, |w| &w.reads_pauses),
            ),
            (
                "ringws_messages_deflated_total",
                "Data messages sent compressed (permessage-deflate).",
                sum(ws, |w| &w.messages_deflated),
            ),
            (
                "ringws_messages_inflated_total",
                "Data messages received compressed (permessage-deflate).",
                sum(ws, |w| &w.messages_inflated),
            ),
            (
                "ringws_sends_total",
                "Socket sends submitted (one per connection per loop turn at most).",
                sum(ws, |w| &w.sends),
            ),
            (
                "ringws_sends_fixed_total",
                "Sends written from registered (fixed) buffers.",
                sum(ws, |w| &w.sends_fixed),
            ),
            (
                "ringws_messages_received_total",
                "Data messages received.",
                sum(ws, |w| &w.messages_received),
            ),
            (
                "ringws_messages_sent_total",
                "Data messages queued for sending.",
                sum(ws, |w| &w.messages_sent),
            ),
            (
                "ringws_bytes_received_total",
                "Bytes read from sockets.",
                sum(ws, |w| &w.bytes_received),
            ),
            (
                "ringws_bytes_sent_total",
                "Bytes written to sockets.",
                sum(ws, |w| &w.bytes_sent),
            ),
            (
                "ringws_backpressure_drops_total",
                "Messages dropped: send queue full.",
                sum(ws, |w| &w.backpressure_drops),
            ),
            (
                "ringws_backpressure_closes_total",
                "Connections closed 1008: send queue full.",
                sum(ws, |w| &w.backpressure_closes),
            ),
        ];
        for (name, help, n) in counters {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {n}");
        }
        header(
            &mut out,
            "ringws_closes_total",
            "counter",
            "Ended connections by close code.",
        );
        for (i, code) in CLOSE_CODES
            .iter()
            .map(|c| c.to_string())
            .chain(["other".into()])
            .enumerate()
        {
            let n: u64 = ws.iter().map(|w| w.closes[i].load(Relaxed)).sum();
            labelled(&mut out, "ringws_closes_total", "code", &code, n);
        }
        header(
            &mut out,
            "ringws_http_responses_total",
            "counter",
            "Non-101 HTTP answers by status.",
        );
        for (i, s) in HTTP_STATUSES
            .iter()
            .map(|c| c.to_string())
            .chain(["other".into()])
            .enumerate()
        {
            let n: u64 = ws.iter().map(|w| w.http[i].load(Relaxed)).sum();
            labelled(&mut out, "ringws_http_responses_total", "status", &s, n);
        }
        let gauges: [(&str, &str, u64); 5] = [
            (
                "ringws_reads_paused",
                "Connections whose reading is paused.",
                sum(ws, |w| &w.reads_paused),
            ),
            (
                "ringws_deflate_connections",
                "Open connections that agreed to permessage-deflate.",
                sum(ws, |w| &w.deflate_connections),
            ),
            (
                "ringws_fixed_files_in_use",
                "Direct descriptors in use.",
                sum(ws, |w| &w.fixed_files),
            ),
            (
                "ringws_slab_slots",
                "Connection slots in use.",
                sum(ws, |w| &w.slab_slots),
            ),
            ("ringws_workers", "Worker threads.", ws.len() as u64),
        ];
        for (name, help, n) in gauges {
            header(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {n}");
        }
        if let Some(b) = &self.broker {
            b.render(&mut out);
        }
        if let Some(m) = &self.memory {
            render_memory(&mut out, m);
        }
        if let Some(h) = &self.history {
            render_history(&mut out, h);
        }
        out
    }
}

/// One unlabelled sample each, with its header: `(name, kind, help, value)`.
fn samples(out: &mut String, lines: &[(&str, &str, &str, u64)]) {
    for &(name, kind, help, n) in lines {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {n}");
    }
}

fn render_memory(out: &mut String, m: &crate::runtime::budget::MemoryBudget) {
    let lines = [
        (
            "ringws_memory_budget_bytes",
            "gauge",
            "The memory budget (Config::memory_budget_bytes).",
            m.budget_bytes(),
        ),
        (
            "ringws_memory_used_bytes",
            "gauge",
            "Bytes buffered by the engine, counted against the budget.",
            m.used_bytes(),
        ),
        (
            "ringws_memory_budget_closes_total",
            "counter",
            "Connections closed 1013: the memory budget stayed exceeded.",
            m.closes(),
        ),
    ];
    samples(out, &lines);
}

fn render_history(out: &mut String, h: &crate::topics::HistoryStore) {
    let lines = [
        (
            "ringws_history_topics",
            "gauge",
            "Topics whose history is held.",
            h.topics_held() as u64,
        ),
        (
            "ringws_history_resumes_total",
            "counter",
            "Subscriptions that resumed from a position (psub with a position).",
            h.resumes.load(Relaxed),
        ),
        (
            "ringws_history_gaps_total",
            "counter",
            "Resumes that were a gap: the position was no longer held, or of another epoch.",
            h.gaps.load(Relaxed),
        ),
        (
            "ringws_history_evicted_total",
            "counter",
            "Topic histories dropped to stay within Config::history_topics_max.",
            h.evicted.load(Relaxed),
        ),
        (
            "ringws_history_forgotten_total",
            "counter",
            "Topic histories dropped because the node may have missed messages (broker).",
            h.forgotten.load(Relaxed),
        ),
    ];
    samples(out, &lines);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sums_workers() {
        let a = Arc::new(WorkerMetrics::default());
        let b = Arc::new(WorkerMetrics::default());
        add(&a.open, 2);
        add(&b.open, 3);
        a.close(1000);
        b.close(4321);
        b.http(503);
        let m = Metrics {
            workers: vec![a, b],
            broker: None,
            history: None,
            memory: Some(Arc::new(crate::runtime::budget::MemoryBudget::new(1 << 20))),
        };
        let text = m.render();
        assert!(
            text.contains("ringws_connections{state=\"open\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("ringws_closes_total{code=\"1000\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ringws_closes_total{code=\"other\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ringws_http_responses_total{status=\"503\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("ringws_workers 2\n"), "{text}");
        assert!(
            text.contains("ringws_memory_budget_bytes 1048576\n"),
            "{text}"
        );
        assert_eq!(m.closes_with(1000), 1);
    }
}
