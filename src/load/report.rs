//! The end-of-run report: a table for people, a JSON document for scripts (written by hand).

use std::fmt::Write as _;

use super::stats::BroadcastResult;

/// One second of the run, as the progress line saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub t_s: f64,
    pub open: u64,
    pub messages_per_s: f64,
    pub deliveries_per_s: f64,
    pub errors: u64,
}

/// Errors by kind; `total()` is the report's `errors`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Errors {
    pub connect: u64,
    pub handshake: u64,
    pub closed: u64,
    pub protocol: u64,
    pub mismatch: u64,
    pub missing: u64,
    pub out_of_order: u64,
    pub deadline: u64,
    /// TLS failures: a certificate refused, an alert from the server, a bad record.
    pub tls: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect
            + self.handshake
            + self.closed
            + self.protocol
            + self.mismatch
            + self.missing
            + self.out_of_order
            + self.deadline
            + self.tls
    }

    pub fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.handshake += o.handshake;
        self.closed += o.closed;
        self.protocol += o.protocol;
        self.mismatch += o.mismatch;
        self.missing += o.missing;
        self.out_of_order += o.out_of_order;
        self.deadline += o.deadline;
        self.tls += o.tls;
    }
}

/// Churn and resume (`ringws-load resume`): subscribers that dropped and came back with
/// `psub <topic> <position>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resumes {
    /// Times a subscriber dropped its connection on purpose.
    pub drops: u64,
    /// Times it came back and the server confirmed the resume (`ok psub …`).
    pub resumed: u64,
    /// Messages the server replayed to resumed subscribers (`ok psub <topic> <n>`).
    pub recovered: u64,
    /// Resumes the server answered `gap`: history did not reach back (an error of the run).
    pub gaps: u64,
    /// Subscribers still away when the run ended (an error of the run).
    pub not_back: u64,
    /// Time to resume, from the reconnect to the server's answer: p50 and p99.
    pub resume_p50_ns: u64,
    pub resume_p99_ns: u64,
}

impl Resumes {
    pub fn add(&mut self, o: &Resumes) {
        self.drops += o.drops;
        self.resumed += o.resumed;
        self.recovered += o.recovered;
        self.gaps += o.gaps;
        self.not_back += o.not_back;
    }

    fn fields(&self) -> [(&'static str, String); 7] {
        [
            ("resume_drops", num(self.drops as f64)),
            ("resume_resumed", num(self.resumed as f64)),
            ("resume_recovered", num(self.recovered as f64)),
            ("resume_gaps", num(self.gaps as f64)),
            ("resume_not_back", num(self.not_back as f64)),
            ("resume_p50_ms", num(ms(self.resume_p50_ns))),
            ("resume_p99_ms", num(ms(self.resume_p99_ns))),
        ]
    }
}

/// permessage-deflate as the client saw it. Bytes and messages count what arrived on every open
/// connection, the fanout publisher's own copies included (frames, not the handshake answer);
/// `wire` is what TCP delivered, `payload` what the messages held once inflated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compression {
    /// `--deflate`: every connection offered it.
    pub offered: bool,
    /// Connections (subscribers, echo or idle ones; not the publisher) whose server agreed.
    pub agreed: u64,
    /// Connections that offered it and got a plain answer (they stay uncompressed).
    pub declined: u64,
    pub messages_received: u64,
    /// Received messages that arrived compressed (RSV1).
    pub compressed_received: u64,
    /// Echo messages sent compressed.
    pub compressed_sent: u64,
    pub wire_bytes_received: u64,
    pub payload_bytes_received: u64,
}

impl Compression {
    pub fn add(&mut self, o: &Compression) {
        self.offered |= o.offered;
        self.agreed += o.agreed;
        self.declined += o.declined;
        self.messages_received += o.messages_received;
        self.compressed_received += o.compressed_received;
        self.compressed_sent += o.compressed_sent;
        self.wire_bytes_received += o.wire_bytes_received;
        self.payload_bytes_received += o.payload_bytes_received;
    }

    /// Payload bytes per wire byte received (> 1: compression saved bytes); 0 with no data.
    pub fn ratio(&self) -> f64 {
        if self.wire_bytes_received == 0 {
            return 0.0;
        }
        self.payload_bytes_received as f64 / self.wire_bytes_received as f64
    }

    /// Wire bytes received per message received (frame headers, pings and closes included).
    pub fn wire_bytes_per_message(&self) -> f64 {
        if self.messages_received == 0 {
            return 0.0;
        }
        self.wire_bytes_received as f64 / self.messages_received as f64
    }

    fn fields(&self) -> [(&'static str, String); 10] {
        [
            ("deflate_offered", self.offered.to_string()),
            ("deflate_agreed", num(self.agreed as f64)),
            ("deflate_declined", num(self.declined as f64)),
            ("messages_received", num(self.messages_received as f64)),
            (
                "messages_compressed_received",
                num(self.compressed_received as f64),
            ),
            ("messages_compressed_sent", num(self.compressed_sent as f64)),
            ("wire_bytes_received", num(self.wire_bytes_received as f64)),
            (
                "payload_bytes_received",
                num(self.payload_bytes_received as f64),
            ),
            ("compression_ratio", num(self.ratio())),
            ("wire_bytes_per_message", num(self.wire_bytes_per_message())),
        ]
    }
}

/// `wss://` as the client saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tls {
    /// The run spoke TLS.
    pub on: bool,
    /// Connections that finished a TLS handshake: full ones and resumed ones.
    pub handshakes_full: u64,
    pub handshakes_resumed: u64,
}

impl Tls {
    pub fn add(&mut self, o: &Tls) {
        self.on |= o.on;
        self.handshakes_full += o.handshakes_full;
        self.handshakes_resumed += o.handshakes_resumed;
    }

    fn fields(&self) -> [(&'static str, String); 3] {
        [
            ("tls", self.on.to_string()),
            ("tls_handshakes_full", num(self.handshakes_full as f64)),
            (
                "tls_handshakes_resumed",
                num(self.handshakes_resumed as f64),
            ),
        ]
    }
}

/// Server VmRSS (bytes) at each phase; 0 when not measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    pub start_bytes: u64,
    pub connected_bytes: u64,
    pub end_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    pub connections: u64,
    pub connected: u64,
    pub payload_bytes: u64,
    pub workers: u32,
    pub src_ips: u32,
    pub duration_s: f64,
    pub connect_s: f64,
    pub messages: u64,
    pub deliveries: u64,
    pub latency_p50_ns: u64,
    pub latency_p99_ns: u64,
    pub latency_p999_ns: u64,
    pub latency_max_ns: u64,
    pub latency_curve: Vec<(f64, u64)>,
    pub broadcasts: Vec<BroadcastResult>,
    pub fanout_complete_p50_ns: u64,
    pub fanout_complete_p99_ns: u64,
    pub fanout_complete_max_ns: u64,
    pub errors: Errors,
    pub rss: Rss,
    pub timeline: Vec<Sample>,
    /// Multishot receives the client re-armed because its buffer ring ran dry (diagnostic).
    pub client_recv_enobufs: u64,
    /// Connection attempts repeated after a failure to open (e.g. a 503 past the server's
    /// pending-handshake limit); not errors unless the last attempt fails too.
    pub connect_retries: u64,
    pub compression: Compression,
    /// `resume` only: drops, resumes, what was recovered and what was not.
    pub resumes: Option<Resumes>,
    pub tls: Tls,
    /// CPU seconds the server (`--server-pid`) used during the run phase (0: not measured).
    pub server_cpu_run_s: f64,
    /// CPU seconds the load generator itself used during the run phase (is it the limit?).
    pub client_cpu_run_s: f64,
    /// `--shard I/N`: which part of the run this report is (None: the whole run, or a merge).
    pub shard: Option<(u32, u32)>,
    /// The merged reports' shards, for a report made by `ringws-load merge` (else 0).
    pub merged_shards: u32,
    /// The latency histogram's buckets, `(value_ns, count)`: reports merge by them.
    pub latency_buckets: Vec<(u64, u64)>,
}

fn per_s(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// A JSON number: finite, no exponent surprises for integers.
fn num(v: f64) -> String {
    if !v.is_finite() {
        "0".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Report {
    pub fn messages_per_s(&self) -> f64 {
        per_s(self.messages, self.duration_s)
    }

    pub fn deliveries_per_s(&self) -> f64 {
        per_s(self.deliveries, self.duration_s)
    }

    pub fn connect_per_s(&self) -> f64 {
        per_s(self.connected, self.connect_s)
    }

    /// Peak of the sampled server RSS.
    pub fn server_rss_bytes(&self) -> u64 {
        self.rss
            .start_bytes
            .max(self.rss.connected_bytes)
            .max(self.rss.end_bytes)
    }

    /// Server memory added per open connection, from the start and connected samples.
    pub fn server_rss_per_conn_bytes(&self) -> f64 {
        if self.connected == 0 || self.rss.connected_bytes == 0 {
            return 0.0;
        }
        self.rss
            .connected_bytes
            .saturating_sub(self.rss.start_bytes) as f64
            / self.connected as f64
    }

    /// Server CPU per echo message or fanout delivery during the run phase, in µs.
    pub fn server_cpu_us_per_message(&self) -> f64 {
        let n = if self.deliveries > 0 {
            self.deliveries
        } else {
            self.messages
        };
        if n == 0 {
            return 0.0;
        }
        self.server_cpu_run_s * 1e6 / n as f64
    }

    pub fn broadcasts_complete(&self, subscribers: u64) -> usize {
        self.broadcasts
            .iter()
            .filter(|b| b.deliveries as u64 >= subscribers)
            .count()
    }

    /// A run passes with no error of any kind (fanout: nothing missing or out of order;
    /// resume: besides, no gap and every subscriber back).
    pub fn passed(&self) -> bool {
        self.errors.total() == 0 && self.resumes.is_none_or(|r| r.gaps == 0 && r.not_back == 0)
    }

    fn scalar_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = self.run_fields();
        fields.extend(self.compression.fields());
        if let Some(r) = &self.resumes {
            fields.extend(r.fields());
        }
        fields.extend(self.tls.fields());
        fields.push(("passed", self.passed().to_string()));
        fields
    }

    fn run_fields(&self) -> Vec<(&'static str, String)> {
        let e = &self.errors;
        vec![
            ("scenario", json_str(&self.scenario)),
            ("connections", num(self.connections as f64)),
            ("connected", num(self.connected as f64)),
            ("payload_bytes", num(self.payload_bytes as f64)),
            ("workers", num(self.workers as f64)),
            ("src_ips", num(self.src_ips as f64)),
            ("duration_s", num(self.duration_s)),
            ("connect_s", num(self.connect_s)),
            ("connect_per_s", num(self.connect_per_s())),
            ("messages", num(self.messages as f64)),
            ("messages_per_s", num(self.messages_per_s())),
            ("deliveries", num(self.deliveries as f64)),
            ("deliveries_per_s", num(self.deliveries_per_s())),
            ("latency_p50_us", num(us(self.latency_p50_ns))),
            ("latency_p99_us", num(us(self.latency_p99_ns))),
            ("latency_p999_us", num(us(self.latency_p999_ns))),
            ("latency_max_us", num(us(self.latency_max_ns))),
            ("broadcasts", num(self.broadcasts.len() as f64)),
            (
                "broadcasts_complete",
                num(self.broadcasts_complete(self.connected) as f64),
            ),
            (
                "fanout_complete_p50_ms",
                num(ms(self.fanout_complete_p50_ns)),
            ),
            (
                "fanout_complete_p99_ms",
                num(ms(self.fanout_complete_p99_ns)),
            ),
            (
                "fanout_complete_max_ms",
                num(ms(self.fanout_complete_max_ns)),
            ),
            ("missing", num(e.missing as f64)),
            ("out_of_order", num(e.out_of_order as f64)),
            ("errors", num(e.total() as f64)),
            ("server_rss_bytes", num(self.server_rss_bytes() as f64)),
            ("server_rss_start_bytes", num(self.rss.start_bytes as f64)),
            (
                "server_rss_connected_bytes",
                num(self.rss.connected_bytes as f64),
            ),
            ("server_rss_end_bytes", num(self.rss.end_bytes as f64)),
            (
                "server_rss_per_conn_bytes",
                num(self.server_rss_per_conn_bytes()),
            ),
            ("server_cpu_run_s", num(self.server_cpu_run_s)),
            (
                "server_cpu_us_per_message",
                num(self.server_cpu_us_per_message()),
            ),
            ("client_cpu_run_s", num(self.client_cpu_run_s)),
            (
                "shard",
                self.shard
                    .map_or("null".into(), |(i, n)| json_str(&format!("{i}/{n}"))),
            ),
            ("merged_shards", num(f64::from(self.merged_shards))),
            ("client_recv_enobufs", num(self.client_recv_enobufs as f64)),
            ("connect_retries", num(self.connect_retries as f64)),
        ]
    }

    fn errors_json(&self) -> String {
        let e = &self.errors;
        format!(
            "{{\"connect\": {}, \"handshake\": {}, \"closed\": {}, \"protocol\": {}, \"mismatch\": {}, \
             \"missing\": {}, \"out_of_order\": {}, \"deadline\": {}, \"tls\": {}}}",
            e.connect,
            e.handshake,
            e.closed,
            e.protocol,
            e.mismatch,
            e.missing,
            e.out_of_order,
            e.deadline,
            e.tls
        )
    }

    fn arrays_json(&self, out: &mut String) {
        let curve: Vec<String> = self
            .latency_curve
            .iter()
            .map(|&(p, v)| format!("[{}, {}]", num(p), num(us(v))))
            .collect();
        let _ = writeln!(out, "  \"latency_curve_us\": [{}],", curve.join(", "));
        let buckets: Vec<String> = self
            .latency_buckets
            .iter()
            .map(|&(v, n)| format!("[{v}, {n}]"))
            .collect();
        let _ = writeln!(out, "  \"latency_histogram_ns\": [{}],", buckets.join(", "));
        let timeline: Vec<String> = self
            .timeline
            .iter()
            .map(|s| {
                format!(
                    "{{\"t_s\": {}, \"open\": {}, \"messages_per_s\": {}, \"deliveries_per_s\": {}, \"errors\": {}}}",
                    num(s.t_s),
                    s.open,
                    num(s.messages_per_s),
                    num(s.deliveries_per_s),
                    s.errors
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  \"timeline\": [\n    {}\n  ],",
            timeline.join(",\n    ")
        );
        // A shard's report keeps every broadcast: the merge needs them all.
        let keep = if self.shard.is_some() {
            usize::MAX
        } else {
            10_000
        };
        let per: Vec<String> = self
            .broadcasts
            .iter()
            .take(keep)
            .map(|b| {
                format!(
                    "{{\"seq\": {}, \"deliveries\": {}, \"complete_ms\": {}, \"sent_unix_ns\": {}, \
                     \"last_unix_ns\": {}}}",
                    b.seq,
                    b.deliveries,
                    num(ms(b.complete_ns)),
                    b.sent_ns,
                    b.last_ns
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  \"per_broadcast\": [\n    {}\n  ]",
            per.join(",\n    ")
        );
    }

    pub fn to_json(&self) -> String {
        let mut out = String::from("{\n");
        for (k, v) in self.scalar_fields() {
            let _ = writeln!(out, "  \"{k}\": {v},");
        }
        let _ = writeln!(out, "  \"error_kinds\": {},", self.errors_json());
        self.arrays_json(&mut out);
        out.push_str("}\n");
        out
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut t = String::new();
        for (k, v) in self.scalar_fields() {
            let _ = writeln!(t, "{k:<28} {}", v.trim_matches('"'));
        }
        let e = &self.errors;
        let _ = writeln!(
            t,
            "{:<28} connect {} handshake {} closed {} protocol {} mismatch {} missing {} out_of_order {} deadline {} tls {}",
            "error_kinds",
            e.connect,
            e.handshake,
            e.closed,
            e.protocol,
            e.mismatch,
            e.missing,
            e.out_of_order,
            e.deadline,
            e.tls
        );
        t
    }
}

/// The progress line printed each second (to stderr).
pub fn progress_line(s: &Sample, phase: &str) -> String {
    format!(
        "[{:>6.1}s] {:<8} open {:>8}  msgs/s {:>11.0}  deliveries/s {:>11.0}  errors {}",
        s.t_s, phase, s.open, s.messages_per_s, s.deliveries_per_s, s.errors
    )
}
