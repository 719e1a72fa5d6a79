//! Latency percentiles against a sorted-vector reference; broadcast completion bookkeeping.
use ringws::load::stats::{Broadcasts, Latency, complete_quantile_ns, quantile_sorted};

/// Deterministic pseudo-random latencies (xorshift), spread over several orders of magnitude.
fn samples(n: usize, seed: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let magnitude = 10u64.pow((x % 6) as u32 + 2); // 100 ns ..= 10 ms
            1 + (x >> 8) % magnitude
        })
        .collect()
}

#[test]
fn histogram_quantiles_match_the_sorted_reference_within_its_precision() {
    for (n, seed) in [(1, 3), (10, 5), (1_000, 7), (100_000, 11)] {
        let values = samples(n, seed);
        let mut h = Latency::new();
        for &v in &values {
            h.record_ns(v);
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        assert_eq!(h.count(), n as u64);
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let want = quantile_sorted(&sorted, q) as f64;
            let got = h.quantile_ns(q) as f64;
            // 3 significant digits: the bucket holding the reference value is within 0.1%.
            assert!(
                (got - want).abs() <= want * 0.001 + 1.0,
                "n={n} q={q}: histogram {got} vs reference {want}"
            );
        }
        let max = *sorted.last().unwrap() as f64;
        assert!((h.max_ns() as f64 - max).abs() <= max * 0.001 + 1.0);
    }
}

#[test]
fn merged_histograms_equal_one_histogram_of_everything() {
    let (a, b) = (samples(5_000, 1), samples(7_000, 2));
    let (mut ha, mut hb, mut all) = (Latency::new(), Latency::new(), Latency::new());
    a.iter().for_each(|&v| ha.record_ns(v));
    b.iter().for_each(|&v| hb.record_ns(v));
    a.iter().chain(&b).for_each(|&v| all.record_ns(v));
    ha.merge(&hb);
    assert_eq!(ha.count(), 12_000);
    for q in [0.5, 0.9, 0.99, 1.0] {
        assert_eq!(ha.quantile_ns(q), all.quantile_ns(q), "q={q}");
    }
}

#[test]
fn quantile_sorted_is_nearest_rank() {
    let v: Vec<u64> = (1..=100).collect();
    assert_eq!(quantile_sorted(&v, 0.5), 50);
    assert_eq!(quantile_sorted(&v, 0.99), 99);
    assert_eq!(quantile_sorted(&v, 0.991), 100);
    assert_eq!(quantile_sorted(&v, 0.0), 1);
    assert_eq!(quantile_sorted(&v, 1.0), 100);
    assert_eq!(quantile_sorted(&[], 0.5), 0);
    assert_eq!(Latency::new().quantile_ns(0.5), 0);
}

#[test]
fn broadcast_completion_is_last_delivery_minus_send_and_merges_across_workers() {
    let (mut w0, mut w1) = (Broadcasts::default(), Broadcasts::default());
    // Broadcast 0 sent at 1000: delivered at 1500 (w0) and 4000 (w1).
    w0.record(0, 1000, 1500);
    w1.record(0, 1000, 4000);
    // Broadcast 1 sent at 2000: delivered only by w0, twice.
    w0.record(1, 2000, 2100);
    w0.record(1, 2000, 2300);
    // Broadcast 3 only at w1; broadcast 2 never delivered.
    w1.record(3, 5000, 5600);
    w0.merge(&w1);
    let r = w0.results(5);
    assert_eq!(r.len(), 5);
    assert_eq!((r[0].deliveries, r[0].complete_ns), (2, 3000));
    assert_eq!((r[1].deliveries, r[1].complete_ns), (2, 300));
    assert_eq!(r[2].deliveries, 0);
    assert_eq!((r[3].deliveries, r[3].complete_ns), (1, 600));
    assert_eq!(r[4].deliveries, 0);
    // Only broadcasts that reached all 2 subscribers count for the completion percentiles.
    assert_eq!(complete_quantile_ns(&r, 2, 1.0), 3000);
    assert_eq!(complete_quantile_ns(&r, 2, 0.5), 300);
    assert_eq!(complete_quantile_ns(&r, 3, 0.5), 0);
}
