//! Latency histograms and per-broadcast completion tracking, merged across client workers.

use hdrhistogram::Histogram;

/// Highest latency a histogram records, in nanoseconds (10 minutes); larger values saturate.
pub const LATENCY_NS_MAX: u64 = 600_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits (0.1% resolution).
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        let hist =
            Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds");
        Latency { hist }
    }

    pub fn record_ns(&mut self, value_ns: u64) {
        self.hist.saturating_record(value_ns.max(1));
    }

    pub fn merge(&mut self, other: &Latency) {
        self.hist
            .add(&other.hist)
            .expect("histograms with equal bounds");
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The value at `quantile` (0.0 ..= 1.0), in nanoseconds; 0 when empty.
    pub fn quantile_ns(&self, quantile: f64) -> u64 {
        if self.hist.is_empty() {
            return 0;
        }
        self.hist.value_at_quantile(quantile)
    }

    pub fn max_ns(&self) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.max()
        }
    }

    /// The recorded buckets as `(value_ns, count)`, lowest first: what a report carries so that
    /// the reports of several shards merge into the histogram of the whole run.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// Adds buckets written by [`Latency::buckets`] (of this or another histogram).
    pub fn add_buckets(&mut self, buckets: &[(u64, u64)]) {
        for &(value_ns, count) in buckets {
            let _ = self.hist.record_n(value_ns.clamp(1, LATENCY_NS_MAX), count);
        }
    }

    /// Points `(percentile, value_ns)` for a percentile curve: 0, 50, 90, 99, 99.9, … up to the max.
    pub fn curve(&self) -> Vec<(f64, u64)> {
        let mut points = Vec::new();
        if self.hist.is_empty() {
            return points;
        }
        for p in [
            0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 99.999,
        ] {
            points.push((p, self.hist.value_at_percentile(p)));
        }
        points.push((100.0, self.hist.max()));
        points
    }
}

/// Nearest-rank percentile of a sorted slice (the reference the histogram is tested against).
pub fn quantile_sorted(sorted: &[u64], quantile: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Per broadcast (indexed by sequence number): how many subscribers got it, when it was sent and
/// when the last subscriber got it. Each worker keeps one; they are merged at the end.
#[derive(Clone, Debug, Default)]
pub struct Broadcasts {
    pub deliveries: Vec<u32>,
    pub sent_ns: Vec<u64>,
    pub last_ns: Vec<u64>,
}

/// One broadcast's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BroadcastResult {
    pub seq: u64,
    pub deliveries: u32,
    /// From the send timestamp until the last subscriber received it.
    pub complete_ns: u64,
    /// The send timestamp and the last receipt (wall clock, ns since 1970: shards merge by
    /// them); 0 when never received.
    pub sent_ns: u64,
    pub last_ns: u64,
}

impl Broadcasts {
    /// Counts one delivery of broadcast `seq` sent at `sent_ns` and received at `recv_ns`.
    pub fn record(&mut self, seq: u64, sent_ns: u64, recv_ns: u64) {
        self.add(seq, 1, sent_ns, recv_ns);
    }

    /// Counts `deliveries` of broadcast `seq`, sent at `sent_ns`, the last received at
    /// `last_ns` (another worker's or another shard's tally).
    pub fn add(&mut self, seq: u64, deliveries: u32, sent_ns: u64, last_ns: u64) {
        let i = seq as usize;
        if i >= self.deliveries.len() {
            self.deliveries.resize(i + 1, 0);
            self.sent_ns.resize(i + 1, u64::MAX);
            self.last_ns.resize(i + 1, 0);
        }
        self.deliveries[i] += deliveries;
        self.sent_ns[i] = self.sent_ns[i].min(sent_ns);
        self.last_ns[i] = self.last_ns[i].max(last_ns);
    }

    pub fn merge(&mut self, other: &Broadcasts) {
        for i in 0..other.deliveries.len() {
            if other.deliveries[i] > 0 {
                self.add(
                    i as u64,
                    other.deliveries[i],
                    other.sent_ns[i],
                    other.last_ns[i],
                );
            }
        }
    }

    /// The outcome of broadcasts `0..published`; one never received has 0 deliveries.
    pub fn results(&self, published: u64) -> Vec<BroadcastResult> {
        (0..published)
            .map(|seq| {
                let i = seq as usize;
                match self.deliveries.get(i) {
                    Some(&d) if d > 0 => BroadcastResult {
                        seq,
                        deliveries: d,
                        complete_ns: self.last_ns[i].saturating_sub(self.sent_ns[i]),
                        sent_ns: self.sent_ns[i],
                        last_ns: self.last_ns[i],
                    },
                    _ => BroadcastResult {
                        seq,
                        deliveries: 0,
                        complete_ns: 0,
                        sent_ns: 0,
                        last_ns: 0,
                    },
                }
            })
            .collect()
    }
}

/// p-quantile (nearest rank) of the completion times of the broadcasts delivered to everyone.
pub fn complete_quantile_ns(results: &[BroadcastResult], subscribers: u32, quantile: f64) -> u64 {
    let mut done: Vec<u64> = results
        .iter()
        .filter(|r| r.deliveries >= subscribers && subscribers > 0)
        .map(|r| r.complete_ns)
        .collect();
    done.sort_unstable();
    quantile_sorted(&done, quantile)
}

/// The wall clock in ns since 1970: the fanout timestamps, comparable across processes and
/// (with synchronised clocks) across machines, so that sharded runs merge.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
