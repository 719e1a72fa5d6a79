//! `ringws-load merge`: the JSON reports of the shards of one run (`--shard I/N`, on several
//! machines or processes) combined into the report of the whole run. Counts add up; the latency
//! histograms merge bucket by bucket, so the percentiles are those of every delivery; each
//! broadcast's deliveries add up, and it completes when the last shard's last subscriber got it
//! (the timestamps are wall-clock: the machines' clocks must agree). Server RSS and CPU are per
//! node and stay in the shards' own reports.

use serde_json::Value;

use super::report::{Errors, Report};
use super::stats::{self, Broadcasts, Latency};

/// Why reports cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeError(pub String);

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, MergeError> {
    Err(MergeError(msg.into()))
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// `"I/N"` of a shard's report.
fn shard_of(v: &Value) -> Result<(u32, u32), MergeError> {
    let s = v.get("shard").and_then(Value::as_str);
    let parsed = s.and_then(|s| {
        let (i, n) = s.split_once('/')?;
        Some((i.parse().ok()?, n.parse().ok()?))
    });
    match parsed {
        Some(p) => Ok(p),
        None => fail("a report without \"shard\": run each part with --shard I/N"),
    }
}

/// Merges the reports (JSON texts) of shards 1..=N of one run.
pub fn merge(texts: &[String]) -> Result<Report, MergeError> {
    let reports: Vec<Value> = texts
        .iter()
        .map(|t| serde_json::from_str(t).map_err(|e| MergeError(format!("bad report: {e}"))))
        .collect::<Result<_, _>>()?;
    let Some(first) = reports.first() else {
        return fail("no report to merge");
    };
    let n = shard_of(first)?.1;
    let mut seen = vec![false; n as usize];
    for r in &reports {
        let (i, count) = shard_of(r)?;
        if count != n || i == 0 || i > n || std::mem::replace(&mut seen[i as usize - 1], true) {
            return fail(format!(
                "shard {i}/{count} does not belong with the others (of {n})"
            ));
        }
        if r.get("scenario") != first.get("scenario") {
            return fail("the reports are of different scenarios");
        }
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return fail(format!("shard {}/{n} is missing", missing + 1));
    }
    let fanout = matches!(
        first.get("scenario").and_then(Value::as_str),
        Some("fanout")
    );
    let mut m = Report {
        scenario: first["scenario"].as_str().unwrap_or("").to_string(),
        payload_bytes: u(first, "payload_bytes"),
        merged_shards: n,
        ..Report::default()
    };
    let (mut latency, mut broadcasts) = (Latency::new(), Broadcasts::default());
    for r in &reports {
        m.connections += u(r, "connections");
        m.connected += u(r, "connected");
        m.deliveries += u(r, "deliveries");
        m.workers += u(r, "workers") as u32;
        m.src_ips = m.src_ips.max(u(r, "src_ips") as u32);
        // Fanout: the publishing shard's run is the run (the others wait for it first).
        let publishes = shard_of(r)?.0 == 1;
        if !fanout || publishes {
            m.duration_s = m.duration_s.max(f(r, "duration_s"));
        }
        m.connect_s = m.connect_s.max(f(r, "connect_s"));
        m.client_cpu_run_s += f(r, "client_cpu_run_s");
        m.connect_retries += u(r, "connect_retries");
        // Fanout: every shard reports what was published (shard 1) or expected (the others).
        m.messages = if fanout {
            m.messages.max(u(r, "messages"))
        } else {
            m.messages + u(r, "messages")
        };
        m.errors.add(&errors_of(r));
        latency.add_buckets(&pairs(r, "latency_histogram_ns"));
        add_broadcasts(&mut broadcasts, r);
    }
    m.latency_p50_ns = latency.quantile_ns(0.5);
    m.latency_p99_ns = latency.quantile_ns(0.99);
    m.latency_p999_ns = latency.quantile_ns(0.999);
    m.latency_max_ns = latency.max_ns();
    m.latency_curve = latency.curve();
    m.latency_buckets = latency.buckets();
    if fanout {
        m.broadcasts = broadcasts.results(m.messages);
        let subs = m.connected as u32;
        m.fanout_complete_p50_ns = stats::complete_quantile_ns(&m.broadcasts, subs, 0.5);
        m.fanout_complete_p99_ns = stats::complete_quantile_ns(&m.broadcasts, subs, 0.99);
        m.fanout_complete_max_ns = stats::complete_quantile_ns(&m.broadcasts, subs, 1.0);
    }
    Ok(m)
}

fn errors_of(r: &Value) -> Errors {
    let k = &r["error_kinds"];
    Errors {
        connect: u(k, "connect"),
        handshake: u(k, "handshake"),
        closed: u(k, "closed"),
        protocol: u(k, "protocol"),
        mismatch: u(k, "mismatch"),
        missing: u(k, "missing"),
        out_of_order: u(k, "out_of_order"),
        deadline: u(k, "deadline"),
        tls: u(k, "tls"),
    }
}

/// An array of `[a, b]` pairs of unsigned numbers.
fn pairs(r: &Value, key: &str) -> Vec<(u64, u64)> {
    r.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p.get(0)?.as_u64()?, p.get(1)?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A shard's broadcasts, added with their wall-clock send and last-receipt times.
fn add_broadcasts(into: &mut Broadcasts, r: &Value) {
    let Some(per) = r.get("per_broadcast").and_then(Value::as_array) else {
        return;
    };
    for b in per.iter().filter(|b| u(b, "deliveries") > 0) {
        let deliveries = u(b, "deliveries") as u32;
        into.add(
            u(b, "seq"),
            deliveries,
            u(b, "sent_unix_ns"),
            u(b, "last_unix_ns"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard's report with these latencies (ns) and, for broadcast 0, these receipts.
    fn shard_report(i: u32, n: u32, latencies: &[u64], sent: u64, last: u64) -> String {
        let mut lat = Latency::new();
        latencies.iter().for_each(|&v| lat.record_ns(v));
        let mut b = Broadcasts::default();
        for _ in latencies {
            b.record(0, sent, last);
        }
        let r = Report {
            scenario: "fanout".into(),
            connected: latencies.len() as u64,
            deliveries: latencies.len() as u64,
            messages: 1,
            shard: Some((i, n)),
            latency_buckets: lat.buckets(),
            broadcasts: b.results(1),
            ..Report::default()
        };
        r.to_json()
    }

    /// The merged percentiles are those of one histogram of every value (the reference).
    #[test]
    fn merged_histograms_equal_one_histogram_of_everything() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + x % 50_000_000
        };
        let parts: Vec<Vec<u64>> = (0..3)
            .map(|k| (0..500 + k * 77).map(|_| next()).collect())
            .collect();
        let mut all = Latency::new();
        parts.iter().flatten().for_each(|&v| all.record_ns(v));
        let texts: Vec<String> = parts
            .iter()
            .enumerate()
            .map(|(k, p)| shard_report(k as u32 + 1, 3, p, 1_000 + k as u64, 5_000 + k as u64))
            .collect();
        let m = merge(&texts).unwrap();
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let mut merged = Latency::new();
            merged.add_buckets(&m.latency_buckets);
            assert_eq!(merged.quantile_ns(q), all.quantile_ns(q), "quantile {q}");
        }
        assert_eq!(m.latency_p99_ns, all.quantile_ns(0.99));
        assert_eq!(m.connected, all.count());
        // Broadcast 0: sent at the earliest shard's send, complete at the latest receipt.
        assert_eq!(m.broadcasts[0].deliveries as u64, all.count());
        assert_eq!(m.broadcasts[0].complete_ns, 5_002 - 1_000);
    }

    #[test]
    fn shards_that_do_not_belong_together_are_refused() {
        let one = shard_report(1, 2, &[10], 1, 2);
        let again = shard_report(1, 2, &[10], 1, 2);
        let other = shard_report(2, 3, &[10], 1, 2);
        assert!(
            merge(std::slice::from_ref(&one))
                .unwrap_err()
                .0
                .contains("2/2 is missing")
        );
        assert!(
            merge(&[one.clone(), again]).is_err(),
            "the same shard twice"
        );
        assert!(merge(&[one, other]).is_err(), "of another run");
        assert!(merge(&["{".into()]).unwrap_err().0.contains("bad report"));
    }
}
