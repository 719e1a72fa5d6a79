//! Topic history in Redis Streams against a real `redis-server`: the same contract as the
//! in-memory history (`history::reference::Model`), compared step by step with random publishes
//! and resumes; an epoch lost with Redis's data is a gap.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringws::Position;
use ringws::history::HistoryLimits;
use ringws::history::reference::Model;
use ringws::history_redis::StreamHistory;

/// A `redis-server` of its own: a free port, its own directory, no persistence; killed on drop.
struct Redis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("ringws-hist-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        let r = Redis { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.connect().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn connect(&self) -> Option<redis::Connection> {
        let url = format!("redis://127.0.0.1:{}/", self.port);
        let mut c = redis::Client::open(url).ok()?.get_connection().ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A store with these limits.
fn store(messages_max: usize, age_max_ms: u64) -> StreamHistory {
    StreamHistory::new(HistoryLimits {
        messages_max,
        age_max_ms,
    })
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn matches_the_reference_model_on_a_real_redis() {
    let redis = Redis::start();
    let mut con = redis.connect().unwrap();
    for case in 0..40u64 {
        let mut seed = case.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let limits = HistoryLimits {
            messages_max: 1 + (next(&mut seed) % 6) as usize,
            age_max_ms: [0, 100][(next(&mut seed) % 2) as usize],
        };
        let topic = format!("t{case}");
        let epoch = 0x5000 + case;
        let mut h = StreamHistory::new(limits);
        let mut m = Model::new(epoch, limits);
        let mut now = 1_000;
        for step in 0..40u32 {
            now += next(&mut seed) % 30;
            if !next(&mut seed).is_multiple_of(3) {
                let body = format!("m{step}");
                let got = h.publish(&mut con, &topic, b"", body.as_bytes(), now, epoch);
                assert_eq!(got.unwrap(), m.push(body.into_bytes(), now), "case {case}");
            } else {
                let last = m.last_offset();
                let after = Position {
                    epoch: if next(&mut seed).is_multiple_of(8) {
                        1
                    } else {
                        epoch
                    },
                    offset: next(&mut seed) % (last + 3),
                };
                if last == 0 {
                    continue; // no history yet: a gap whatever the position (tested below)
                }
                let got = h.replay_after(&mut con, &topic, after, now).unwrap();
                let (gap, want) = m.replay_after(after, now);
                assert_eq!(
                    (got.gap, got.messages),
                    (gap, want),
                    "case {case} step {step} after {after}"
                );
                assert_eq!(
                    got.last,
                    Some(Position {
                        epoch,
                        offset: last
                    })
                );
            }
        }
    }
}

#[test]
fn publish_reaches_the_channel_in_offset_order() {
    let redis = Redis::start();
    let mut con = redis.connect().unwrap();
    let mut sub = redis.connect().unwrap();
    let mut ps = sub.as_pubsub();
    ps.subscribe("chan").unwrap();
    let limits = HistoryLimits {
        messages_max: 10,
        age_max_ms: 0,
    };
    let mut h = StreamHistory::new(limits);
    for i in 0..5 {
        h.publish(&mut con, "t", b"chan", format!("x{i}").as_bytes(), 0, 0xabc)
            .unwrap();
    }
    ps.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for i in 0..5 {
        let msg = ps.get_message().unwrap();
        let payload: Vec<u8> = msg.get_payload().unwrap();
        assert_eq!(payload, format!("abc {} x{i}", i + 1).into_bytes());
    }
}

#[test]
fn redis_losing_its_data_is_a_new_epoch_and_a_gap() {
    let redis = Redis::start();
    let mut con = redis.connect().unwrap();
    let limits = HistoryLimits {
        messages_max: 100,
        age_max_ms: 0,
    };
    let mut h = StreamHistory::new(limits);
    let mut seen = Position::start(0);
    for i in 0..3 {
        seen = h
            .publish(&mut con, "t", b"", format!("a{i}").as_bytes(), 0, 0x111)
            .unwrap();
    }
    assert_eq!(
        seen,
        Position {
            epoch: 0x111,
            offset: 3
        }
    );
    let r = h.replay_after(&mut con, "t", seen, 0).unwrap();
    assert!(!r.gap && r.messages.is_empty());

    // Redis forgets everything (as after a restart without persistence), scripts included.
    redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap();
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut con)
        .unwrap();
    let r = h.replay_after(&mut con, "t", seen, 0).unwrap();
    assert!(r.gap, "no history at all is a gap");
    assert_eq!(r.last, None);
    let p = h.publish(&mut con, "t", b"", b"b0", 0, 0x222).unwrap();
    assert_eq!(
        p,
        Position {
            epoch: 0x222,
            offset: 1
        }
    );
    let r = h.replay_after(&mut con, "t", seen, 0).unwrap();
    assert!(r.gap, "the old epoch's position is a gap");
    assert_eq!(r.messages, vec![(p, b"b0".to_vec())]);
}

/// With an age bound a topic's keys expire once every message is too old to replay (plus the
/// slack); without one they never expire. A batch publishes on several topics in one call.
#[test]
fn an_age_bound_expires_a_dead_topic_and_a_batch_spans_topics() {
    use ringws::history_redis::EXPIRE_SLACK_MS;
    let redis = Redis::start();
    let mut con = redis.connect().unwrap();
    let pttl = |con: &mut redis::Connection, key: &str| -> i64 {
        redis::cmd("PTTL").arg(key).query(con).unwrap()
    };
    let mut aged = store(10, 5_000);
    let mut out = Vec::new();
    aged.publish_batch(
        &mut con,
        &[("a", b"", b"a1"), ("b", b"", b"b1"), ("a", b"", b"a2")],
        0,
        0x77,
        &mut out,
    )
    .unwrap();
    let at = |offset| Position {
        epoch: 0x77,
        offset,
    };
    assert_eq!(out, [at(1), at(1), at(2)]);
    for key in ["ringws:h:a", "ringws:m:a", "ringws:h:b", "ringws:m:b"] {
        let ttl = pttl(&mut con, key);
        assert!(
            ttl > 0 && ttl <= (5_000 + EXPIRE_SLACK_MS) as i64,
            "{key}: PTTL {ttl}"
        );
    }
    let mut forever = store(10, 0);
    forever.publish(&mut con, "c", b"", b"c1", 0, 0x78).unwrap();
    assert_eq!(pttl(&mut con, "ringws:h:c"), -1, "no age bound: no expiry");
    assert_eq!(pttl(&mut con, "ringws:m:c"), -1);
}

/// A stream whose meta hash is gone (evicted under `maxmemory`) belongs to a lost epoch: the
/// next publish starts a new epoch from offset 1 on a fresh stream instead of failing on the
/// old stream's higher ids.
#[test]
fn a_stream_left_without_its_meta_starts_a_new_epoch() {
    let redis = Redis::start();
    let mut con = redis.connect().unwrap();
    let mut h = store(10, 0);
    for i in 0..3 {
        h.publish(&mut con, "t", b"", format!("a{i}").as_bytes(), 0, 0x1)
            .unwrap();
    }
    redis::cmd("DEL")
        .arg("ringws:m:t")
        .query::<()>(&mut con)
        .unwrap();
    let p = h.publish(&mut con, "t", b"", b"b0", 0, 0x2).unwrap();
    assert_eq!(
        p,
        Position {
            epoch: 0x2,
            offset: 1
        }
    );
    let r = h
        .replay_after(&mut con, "t", Position::start(0x2), 0)
        .unwrap();
    assert_eq!(
        r.messages,
        vec![(p, b"b0".to_vec())],
        "only the new epoch's"
    );
}

/// Entries carry the publishing node's clock, so with two nodes an entry can look older than
/// the one before it. Only a leading run of too-old entries is dropped (as `TopicHistory`
/// trims from the front): a replay never has a hole in its middle that it does not call a gap.
#[test]
fn an_entry_that_looks_old_between_fresh_ones_is_replayed_not_skipped() {
    let redis = Redis::start();
    let mut con = redis.connect().unwrap();
    let mut h = store(10, 100);
    let mut at = Vec::new();
    for (body, now) in [("a", 1_000u64), ("b", 0), ("c", 1_000)] {
        at.push(
            h.publish(&mut con, "t", b"", body.as_bytes(), now, 0x9)
                .unwrap(),
        );
    }
    let r = h
        .replay_after(&mut con, "t", Position::start(0x9), 1_050)
        .unwrap();
    let got: Vec<&[u8]> = r.messages.iter().map(|(_, p)| p.as_slice()).collect();
    assert_eq!(got, [b"a" as &[u8], b"b", b"c"]);
    assert!(!r.gap);
    // A leading run that is too old is still dropped, and makes a gap.
    let r = h
        .replay_after(&mut con, "t", Position::start(0x9), 1_200)
        .unwrap();
    assert!(r.gap && r.messages.is_empty());
}
