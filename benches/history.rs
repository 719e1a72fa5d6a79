//! What topic history costs (issue #14), measured (not a test): `cargo bench --bench history`.
//!
//! 1. **Memory.** One node: RSS growth for 100 messages kept on each of 10,000 topics (per
//!    message), and for one message on each of 100,000 more topics (per topic), in a fresh
//!    process (measured first). Redis: the growth of its `used_memory` for the same.
//! 2. **A publish, one node.** `Publisher::publish` of 64 B messages round-robin over 1,000
//!    topics with no subscriber, as fast as one thread can: history off against history on
//!    (`history_messages_max` 1,000), rounds interleaved. The difference is what history adds
//!    (the lock, the position, the positioned frame, keeping it).
//! 3. **A publish, with Redis.** The same publishes on a node with a broker, timed until Redis
//!    acknowledged them all: plain `PUBLISH` (history off) against the history script (`XADD`
//!    + `PUBLISH`, history on), rounds interleaved.
//!
//! The machine is shared: read medians and ratios within one run, not absolute figures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{serve, test_config};
use ringws::modes::PubSub;
use ringws::{Config, Message, ServerHandle};

const PAYLOAD: &[u8; 64] = &[b'x'; 64];
const ROUNDS: usize = 5;

fn node(history: usize, brokers: Vec<String>) -> ServerHandle {
    serve(
        Config {
            workers: 2,
            history_messages_max: history,
            history_topics_max: 1_000_000,
            brokers,
            broker_queue_bytes_max: 1 << 30,
            broker_pipeline_max: 256,
            ..test_config()
        },
        |_| PubSub,
    )
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn topic_names(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// ns per `Publisher::publish` of `count` messages over `topics`.
fn publish_ns(n: &ServerHandle, topics: &[String], count: usize) -> f64 {
    let p = n.publisher();
    let text = std::str::from_utf8(PAYLOAD).unwrap();
    let t = Instant::now();
    for i in 0..count {
        p.publish(&topics[i % topics.len()], Message::Text(text));
    }
    t.elapsed().as_nanos() as f64 / count as f64
}

/// Waits until the node's broker acknowledged `total` publishes; the time it took from `t`.
fn acked(n: &ServerHandle, total: u64, t: Instant) -> Duration {
    let b = n.metrics().broker.as_deref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while b.published.load(Relaxed) < total {
        assert!(Instant::now() < deadline, "Redis did not acknowledge");
        assert_eq!(b.publish_dropped.load(Relaxed), 0);
        std::thread::sleep(Duration::from_millis(1));
    }
    t.elapsed()
}

fn redis_used(redis: &RedisServer) -> u64 {
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn flush(redis: &RedisServer) {
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").arg("SYNC").query(&mut c).unwrap();
}

fn one_node_publish() {
    let topics = topic_names(1000, "t");
    let count = 300_000;
    let (off, on) = (node(0, vec![]), node(1000, vec![]));
    // Warm-up: both fill their pools (and `on` its history) once.
    publish_ns(&off, &topics, count);
    publish_ns(&on, &topics, count);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(publish_ns(&off, &topics, count));
        b.push(publish_ns(&on, &topics, count));
    }
    let (a, b) = (median(&mut a), median(&mut b));
    println!(
        "one node, a publish (64 B, 1,000 topics, no subscriber, medians of {ROUNDS} interleaved \
         rounds of {count}): history off {a:.0} ns, on {b:.0} ns: history adds {:.0} ns \
         ({:.2}x)",
        b - a,
        b / a
    );
    for n in [off, on] {
        n.shutdown();
        n.join().unwrap();
    }
}

fn one_node_memory() {
    let n = node(100, vec![]);
    let topics = topic_names(10_000, "m");
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_bytes();
    publish_ns(&n, &topics, 100 * topics.len());
    std::thread::sleep(Duration::from_millis(500));
    let held = rss_bytes();
    let per_message = (held - before) as f64 / (100 * topics.len()) as f64;
    let more = topic_names(100_000, "n");
    publish_ns(&n, &more, more.len());
    std::thread::sleep(Duration::from_millis(500));
    let per_topic = (rss_bytes() - held) as f64 / more.len() as f64 - per_message;
    let counted = n.metrics().render();
    let used: f64 = counted
        .lines()
        .find_map(|l| l.strip_prefix("ringws_memory_used_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    println!(
        "one node, memory (64 B payloads, RSS): {per_message:.0} B per message kept \
         (100 on each of 10,000 topics), {per_topic:.0} B per topic besides its message \
         (100,000 topics of one message); the budget counts {:.0} B per message held (frames)",
        used / (100 * topics.len() + more.len()) as f64
    );
    n.shutdown();
    n.join().unwrap();
}

fn redis_publish(redis: &RedisServer) {
    let topics = topic_names(1000, "t");
    let count = 100_000;
    let (off, on) = (node(0, vec![redis.url()]), node(1000, vec![redis.url()]));
    for n in [&off, &on] {
        let b = n.metrics().broker.as_deref().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !b.all_up() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let run = |n: &ServerHandle, done: &mut u64| {
        let t = Instant::now();
        publish_ns(n, &topics, count);
        *done += count as u64;
        count as f64 / acked(n, *done, t).as_secs_f64()
    };
    let (mut done_off, mut done_on) = (0, 0);
    run(&off, &mut done_off);
    run(&on, &mut done_on);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(run(&off, &mut done_off));
        b.push(run(&on, &mut done_on));
    }
    let (a, b) = (median(&mut a), median(&mut b));
    println!(
        "with Redis, publishes acknowledged per second (64 B, 1,000 topics, pipelines of 256, \
         medians of {ROUNDS} interleaved rounds of {count}): history off (PUBLISH) {a:.0}/s, \
         on (XADD + PUBLISH script) {b:.0}/s: {:.2}x, {:.1} µs more per publish",
        b / a,
        (1e6 / b) - (1e6 / a)
    );
    for n in [off, on] {
        n.shutdown();
        n.join().unwrap();
    }
}

fn redis_memory(redis: &RedisServer) {
    flush(redis);
    let n = node(100, vec![redis.url()]);
    let b = n.metrics().broker.as_deref().unwrap();
    while !b.all_up() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let topics = topic_names(10_000, "m");
    let before = redis_used(redis);
    let t = Instant::now();
    let total = 100 * topics.len();
    publish_ns(&n, &topics, total);
    acked(&n, total as u64, t);
    let held = redis_used(redis);
    let per_message = (held - before) as f64 / total as f64;
    let more = topic_names(100_000, "n");
    let t = Instant::now();
    publish_ns(&n, &more, more.len());
    acked(&n, (total + more.len()) as u64, t);
    let per_topic = (redis_used(redis) - held) as f64 / more.len() as f64 - per_message;
    println!(
        "with Redis, memory in Redis (used_memory, 64 B payloads + the 32 B envelope): \
         {per_message:.0} B per message kept (100 on each of 10,000 topics, MAXLEN 100), \
         {per_topic:.0} B per topic besides its message (stream + meta hash); the node holds none"
    );
    n.shutdown();
    n.join().unwrap();
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    // Memory first: RSS only shows growth into pages the process never had.
    one_node_memory();
    one_node_publish();
    let redis = RedisServer::start();
    redis_publish(&redis);
    redis_memory(&redis);
}
