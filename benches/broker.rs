//! The broker hop, measured (not a test): `cargo bench --bench broker`.
//!
//! 1. Latency: one publisher connection on node A, one subscriber on A and one on node B (same
//!    Redis). Each message is published alone and timed to both subscribers, so every round
//!    gives a local and a cross-node figure from the same moment (interleaved by design).
//! 2. Throughput: `Publisher::publish` of 64 B messages on a node as fast as its queue takes
//!    them, with one Redis-level subscriber (`redis-cli subscribe`); rate = publishes Redis
//!    acknowledged per second. Against `redis-benchmark` PUBLISH of a 64 B payload with the same
//!    pipeline depth, rounds interleaved.
//!
//! The machine is shared: read medians and ratios within one run, not absolute figures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{Client, Event, serve, test_config};
use ringws::modes::PubSub;
use ringws::{Config, Message, ServerHandle};

fn node(url: &str, pipeline_max: usize) -> ServerHandle {
    serve(
        Config {
            brokers: vec![url.to_string()],
            broker_pipeline_max: pipeline_max,
            broker_queue_bytes_max: 512 * 1024 * 1024,
            ..test_config()
        },
        |_| PubSub,
    )
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn pct(v: &mut [u64], q: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q) as usize]
}

fn latency(redis: &RedisServer, rounds: usize) {
    let a = node(&redis.url(), 256);
    let b = node(&redis.url(), 256);
    let sub = |n: &ServerHandle| {
        let mut c = Client::connect(n.local_addr()).unwrap();
        c.send_text("sub lat").unwrap();
        assert_eq!(c.recv().unwrap(), Event::Text("ok sub lat".into()));
        c
    };
    let (mut sa, mut sb) = (sub(&a), sub(&b));
    redis.wait_numsub("ringws:t.lat", 2);
    let mut p = Client::connect(a.local_addr()).unwrap();
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t0 = now_ns();
        p.send_text(&format!("pub lat {t0}")).unwrap();
        for (c, out) in [(&mut sa, &mut local), (&mut sb, &mut remote)] {
            match c.recv().unwrap() {
                Event::Text(t) => {
                    assert_eq!(t.parse::<u64>().unwrap(), t0);
                    out.push(now_ns() - t0);
                }
                other => panic!("{other:?}"),
            }
        }
    }
    let (l50, l99) = (pct(&mut local, 0.5), pct(&mut local, 0.99));
    let (r50, r99) = (pct(&mut remote, 0.5), pct(&mut remote, 0.99));
    let hop = ringws::broker::BrokerMetrics::hop_us_at;
    let bm = b.metrics().broker.as_deref().unwrap();
    println!(
        "latency, {rounds} publishes one at a time: local subscriber p50 {:.1} µs p99 {:.1} µs; \
         other node p50 {:.1} µs p99 {:.1} µs; added by the broker hop p50 {:.1} µs; \
         node B's hop metric (publish → its workers) p50 {} µs p99 {} µs",
        l50 as f64 / 1e3,
        l99 as f64 / 1e3,
        r50 as f64 / 1e3,
        r99 as f64 / 1e3,
        (r50 as f64 - l50 as f64) / 1e3,
        hop(bm, 0.5),
        hop(bm, 0.99),
    );
    drop((sa, sb, p));
    for n in [a, b] {
        n.shutdown();
        n.join().unwrap();
    }
}

/// Publishes/s that one node pushes through Redis (acknowledged), 64 B payloads.
fn ringws_rate(redis: &RedisServer, pipeline: usize, n: u64) -> f64 {
    let a = node(&redis.url(), pipeline);
    let p = a.publisher();
    let payload = "x".repeat(64);
    let m = a.metrics().broker.clone().unwrap();
    let t0 = Instant::now();
    for _ in 0..n {
        p.publish("tp", Message::Text(&payload));
    }
    while m.published.load(Relaxed) + m.publish_dropped.load(Relaxed) < n {
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(m.publish_dropped.load(Relaxed), 0, "queue too small");
    a.shutdown();
    a.join().unwrap();
    n as f64 / secs
}

fn redis_benchmark_rate(redis: &RedisServer, pipeline: usize, n: u64) -> f64 {
    let out = Command::new("redis-benchmark")
        .args(["-p", &redis.port.to_string(), "-n", &n.to_string()])
        .args(["-P", &pipeline.to_string(), "-c", "1", "-q"])
        .args(["PUBLISH", "ringws:t.tp", &"x".repeat(64)])
        .output()
        .expect("redis-benchmark (apt-get install redis-tools)");
    // "PUBLISH ringws:t.tp xxx…: 123456.79 requests per second, p50=…"
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.rsplit('\r').next().unwrap_or(&text).to_string();
    let before = last.split(" requests per second").next().unwrap();
    before
        .rsplit(' ')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("broker bench: redis-server not installed, skipped");
        return;
    }
    let redis = RedisServer::start();
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    latency(&redis, 2000);
    // One subscriber at the Redis level, as in the reference figures.
    let mut listener = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "subscribe", "ringws:t.tp"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli");
    redis.wait_numsub("ringws:t.tp", 1);
    let n = 300_000;
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let cases: [(&str, usize); 4] = [
        ("redis-benchmark -P 32", 32),
        ("ringws pipeline 32", 32),
        ("redis-benchmark -P 1", 1),
        ("ringws pipeline 256", 256),
    ];
    for _ in 0..rounds {
        for (i, (name, depth)) in cases.iter().enumerate() {
            let r = if name.starts_with("redis") {
                redis_benchmark_rate(&redis, *depth, if *depth == 1 { n / 4 } else { n })
            } else {
                ringws_rate(&redis, *depth, n)
            };
            if rows.len() <= i {
                rows.push((name.to_string(), Vec::new()));
            }
            rows[i].1.push(r);
        }
    }
    let base = median(rows[0].1.clone());
    for (name, v) in rows {
        let m = median(v.clone());
        println!(
            "{name:24} median {:>10.0} publishes/s  ({:.2}× redis-benchmark -P 32)  rounds {v:.0?}",
            m,
            m / base
        );
    }
    let _ = listener.kill();
    let _ = listener.wait();
}
