//! Cross-node pub/sub through a real Redis (Debian's `redis-server`, one per test on a free
//! port): three nodes, subscribers and publishers on each; Redis restarted mid-stream with the
//! loss checked against `/metrics`; Redis unreachable at start; a stalled Redis.
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_server::{RedisServer, free_port};
use common::{Client, Event, serve, test_config};
use ringws::modes::{Broadcast, PubSub};
use ringws::{Config, ServerHandle};

const CHANNEL: &str = "ringws:t.news";

fn node(brokers: Vec<String>, tweak: impl FnOnce(&mut Config)) -> ServerHandle {
    let mut cfg = Config {
        workers: 2,
        brokers,
        ..test_config()
    };
    tweak(&mut cfg);
    serve(cfg, |_| PubSub)
}

fn subscriber(node: &ServerHandle, topic: &str) -> Client {
    let mut c = Client::connect(node.local_addr()).unwrap();
    c.send_text(&format!("sub {topic}")).unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text(format!("ok sub {topic}")));
    c
}

fn broker(node: &ServerHandle) -> &ringws::broker::BrokerMetrics {
    node.metrics().broker.as_deref().expect("node has a broker")
}

fn counter(node: &ServerHandle, f: impl Fn(&ringws::broker::BrokerMetrics) -> u64) -> u64 {
    f(broker(node))
}

use std::sync::atomic::Ordering::Relaxed;

/// Waits (a safety net, not a timing check) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads text messages `"<publisher>-<i>"` until `until(&received)` is true. Returns, per
/// publisher, the indexes in arrival order.
fn collect(
    mut c: Client,
    until: impl Fn(&HashMap<usize, Vec<usize>>) -> bool,
) -> HashMap<usize, Vec<usize>> {
    let mut got: HashMap<usize, Vec<usize>> = HashMap::new();
    while !until(&got) {
        match c.recv().unwrap() {
            Event::Text(t) => {
                let (p, i) = t.split_once('-').expect("publisher-index");
                got.entry(p.parse().unwrap())
                    .or_default()
                    .push(i.parse().unwrap());
            }
            Event::Ping(_) => {}
            other => panic!("{other:?}"),
        }
    }
    got
}

#[test]
fn three_nodes_every_subscriber_gets_every_message_once_in_order() {
    let redis = RedisServer::start();
    let nodes: Vec<ServerHandle> = (0..3).map(|_| node(vec![redis.url()], |_| {})).collect();
    let per_node_subs = 3;
    let mut subs = Vec::new();
    for n in &nodes {
        for _ in 0..per_node_subs {
            subs.push(subscriber(n, "news"));
        }
    }
    // A subscriber to another topic on every node: it must get none of "news".
    let mut others: Vec<Client> = nodes.iter().map(|n| subscriber(n, "sport")).collect();
    redis.wait_numsub(CHANNEL, 3);
    redis.wait_numsub("ringws:t.sport", 3);
    let per_pub = 400;
    let mut pubs: Vec<Client> = nodes
        .iter()
        .map(|n| Client::connect(n.local_addr()).unwrap())
        .collect();
    let readers: Vec<_> = subs
        .into_iter()
        .map(|c| {
            std::thread::spawn(move || {
                collect(c, |g| {
                    g.values().map(Vec::len).sum::<usize>() == 3 * per_pub
                        && g.values().all(|v| v.len() == per_pub)
                })
            })
        })
        .collect();
    // Interleave the three publishers.
    for i in 0..per_pub {
        for (p, c) in pubs.iter_mut().enumerate() {
            c.send_text(&format!("pub news {p}-{i}")).unwrap();
        }
    }
    for r in readers {
        let got = r.join().unwrap();
        assert_eq!(got.len(), 3);
        for (p, seq) in got {
            assert_eq!(
                seq,
                (0..per_pub).collect::<Vec<_>>(),
                "publisher {p}: every message once, in order"
            );
        }
    }
    // Nothing more (no duplicate) arrived for "sport": its first message is the marker.
    pubs[1].send_text("pub sport 9-0").unwrap();
    for c in &mut others {
        assert_eq!(c.recv().unwrap(), Event::Text("9-0".into()));
    }
    for n in &nodes {
        assert_eq!(counter(n, |b| b.lost.load(Relaxed)), 0);
        assert_eq!(counter(n, |b| b.stale.load(Relaxed)), 0);
        assert_eq!(counter(n, |b| b.publish_dropped.load(Relaxed)), 0);
    }
    // Each node published its own 400 (+ the marker on node 1) and received the others' 800.
    wait_until("publish acks", || {
        nodes
            .iter()
            .map(|n| counter(n, |b| b.published.load(Relaxed)))
            .sum::<u64>()
            == 3 * per_pub as u64 + 1
    });
    for n in &nodes {
        let r = counter(n, |b| b.received.load(Relaxed));
        assert!(
            r == 2 * per_pub as u64 || r == 2 * per_pub as u64 + 1,
            "received {r}"
        );
    }
    for n in nodes {
        n.shutdown();
        n.join().unwrap();
    }
}

#[test]
fn broadcast_mode_reaches_every_node() {
    let redis = RedisServer::start();
    let nodes: Vec<ServerHandle> = (0..3)
        .map(|_| {
            serve(
                Config {
                    brokers: vec![redis.url()],
                    ..test_config()
                },
                |_| Broadcast,
            )
        })
        .collect();
    redis.wait_numsub("ringws:b", 3);
    let mut clients: Vec<Client> = nodes
        .iter()
        .map(|n| Client::connect(n.local_addr()).unwrap())
        .collect();
    // Each connection is open once its own broadcast comes back to it.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&format!("hello {i}")).unwrap();
        while c.recv().unwrap() != Event::Text(format!("hello {i}")) {}
    }
    clients[2].send_binary(b"to every node").unwrap();
    for c in &mut clients {
        loop {
            match c.recv().unwrap() {
                Event::Binary(b) => break assert_eq!(b, b"to every node"),
                Event::Text(_) => continue,
                other => panic!("{other:?}"),
            }
        }
    }
    for n in nodes {
        n.shutdown();
        n.join().unwrap();
    }
}

/// Every message a subscriber on node `x` missed, per publisher, against what the metrics say
/// was lost for node `x`: the gaps its node saw plus what the other publishers' nodes dropped.
#[test]
fn redis_restarted_mid_stream_loses_exactly_what_metrics_count() {
    let mut redis = RedisServer::start();
    // A small queue so that publishes during the outage are dropped (and counted) too.
    let nodes: Vec<Arc<ServerHandle>> = (0..3)
        .map(|_| {
            Arc::new(node(vec![redis.url()], |c| {
                c.broker_queue_bytes_max = 8 * 1024;
            }))
        })
        .collect();
    let per_node_subs = 2;
    let mut subs = Vec::new();
    for (x, n) in nodes.iter().enumerate() {
        for _ in 0..per_node_subs {
            subs.push((x, subscriber(n, "news")));
        }
    }
    redis.wait_numsub(CHANNEL, 3);
    let mut pubs: Vec<Client> = nodes
        .iter()
        .map(|n| Client::connect(n.local_addr()).unwrap())
        .collect();
    let total = 1200;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|(x, c)| {
            let t = std::thread::spawn(move || {
                // Until every publisher's last message arrived.
                collect(c, |g| {
                    (0..3).all(|p| g.get(&p).is_some_and(|v| v.last() == Some(&(total - 1))))
                })
            });
            (x, t)
        })
        .collect();
    let mut sent = 0;
    let send_round = |pubs: &mut Vec<Client>, sent: &mut usize| {
        for (p, c) in pubs.iter_mut().enumerate() {
            c.send_text(&format!("pub news {p}-{sent}")).unwrap();
        }
        *sent += 1;
    };
    // Phase 1: a steady stream; Redis is killed and restarted in its middle.
    let outage_at = 300;
    let back_at = 700;
    while sent < 900 {
        if sent == outage_at {
            redis.kill();
        }
        if sent == back_at {
            redis.restart();
        }
        send_round(&mut pubs, &mut sent);
        std::thread::sleep(Duration::from_micros(500));
    }
    // Every link is back and every node subscribed again; then the rest, which all arrive
    // (the last message of each publisher reveals any gap before it).
    wait_until("links up", || nodes.iter().all(|n| broker(n).all_up()));
    redis.wait_numsub(CHANNEL, 3);
    // A publish thread learns that its link broke when it next publishes: a warm-up round
    // makes them all reconnect before the tail.
    for _ in 0..5 {
        send_round(&mut pubs, &mut sent);
    }
    std::thread::sleep(Duration::from_millis(300));
    wait_until("links up again", || {
        nodes.iter().all(|n| broker(n).all_up())
    });
    while sent < total - 1 {
        send_round(&mut pubs, &mut sent);
        std::thread::sleep(Duration::from_micros(500));
    }
    // The last round only once the queues are empty, so that it cannot be dropped: it reveals
    // every gap before it.
    wait_until("queues drained", || {
        nodes.iter().all(|n| broker(n).queued.load(Relaxed) == 0)
    });
    send_round(&mut pubs, &mut sent);
    let dropped: Vec<u64> = nodes
        .iter()
        .map(|n| counter(n, |b| b.publish_dropped.load(Relaxed)))
        .collect();
    let mut missing_total = 0;
    for (x, r) in readers {
        let got = r.join().unwrap();
        let lost = counter(&nodes[x], |b| b.lost.load(Relaxed));
        let mut missing = 0;
        for p in 0..3 {
            let seq = &got[&p];
            assert!(
                seq.windows(2).all(|w| w[0] < w[1]),
                "publisher {p} in order, no duplicate"
            );
            if p == x {
                assert_eq!(seq.len(), total, "local subscribers miss nothing");
            }
            missing += total - seq.len();
        }
        let expected = lost + (0..3).filter(|&o| o != x).map(|o| dropped[o]).sum::<u64>();
        eprintln!(
            "node {x}: missed {missing} = lost {lost} + dropped elsewhere (dropped {dropped:?})"
        );
        assert_eq!(
            missing as u64, expected,
            "node {x}: missed {missing}, metrics say lost {lost} + dropped {dropped:?}"
        );
        assert_eq!(counter(&nodes[x], |b| b.stale.load(Relaxed)), 0);
        missing_total += missing;
    }
    assert!(
        missing_total > 0,
        "the outage lost nothing: the test did not test"
    );
    for n in &nodes {
        assert!(counter(n, |b| b.reconnects.load(Relaxed)) >= 1);
    }
    for n in nodes {
        let n = Arc::try_unwrap(n).ok().unwrap();
        n.shutdown();
        n.join().unwrap();
    }
}

#[test]
fn unreachable_at_start_serves_locally_then_joins_when_redis_comes() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    let a = node(vec![url.clone()], |_| {});
    let b = node(vec![url], |_| {});
    assert!(!broker(&a).all_up());
    let text = common::http(a.local_addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        text.contains("ringws_broker_link_up{shard=\"0\",url=\"redis://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("link=\"publish\"} 0"), "{text}");
    // Local pub/sub works meanwhile.
    let mut sa = subscriber(&a, "news");
    let mut pa = Client::connect(a.local_addr()).unwrap();
    pa.send_text("pub news 0-0").unwrap();
    assert_eq!(sa.recv().unwrap(), Event::Text("0-0".into()));
    let mut sb = subscriber(&b, "news");
    let redis = RedisServer::start_on(port);
    wait_until("links up", || broker(&a).all_up() && broker(&b).all_up());
    redis.wait_numsub(CHANNEL, 2);
    let text = common::http(a.local_addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(!text.contains("link=\"publish\"} 0"), "{text}");
    pa.send_text("pub news 0-1").unwrap();
    assert_eq!(sa.recv().unwrap(), Event::Text("0-1".into()));
    assert_eq!(sb.recv().unwrap(), Event::Text("0-1".into()));
    for n in [a, b] {
        n.shutdown();
        n.join().unwrap();
    }
}

#[test]
fn stalled_redis_drops_past_the_bound_and_workers_never_stall() {
    let redis = RedisServer::start();
    let a = node(vec![redis.url()], |c| {
        c.broker_queue_bytes_max = 16 * 1024;
        c.broker_timeout_ms = 500;
    });
    let mut sa = subscriber(&a, "news");
    redis.wait_numsub(CHANNEL, 1);
    redis.signal(libc::SIGSTOP);
    let n = 2000;
    let mut pa = Client::connect(a.local_addr()).unwrap();
    for i in 0..n {
        pa.send_text(&format!("pub news 0-{i}")).unwrap();
    }
    // The local subscriber gets every one while Redis does not answer.
    for i in 0..n {
        assert_eq!(sa.recv().unwrap(), Event::Text(format!("0-{i}")));
    }
    let dropped = counter(&a, |b| b.publish_dropped.load(Relaxed));
    assert!(dropped > 0, "a 16 KiB queue cannot hold {n} publishes");
    // A Redis that does not answer (no FIN either) is noticed on the quiet subscribe link too:
    // its keepalive PING times out and the link is taken down, to be connected again.
    wait_until("the subscribe link noticed", || {
        let text =
            common::http(a.local_addr(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        text.contains("link=\"subscribe\"} 0")
    });
    redis.signal(libc::SIGCONT);
    wait_until("links up again", || broker(&a).all_up());
    redis.wait_numsub(CHANNEL, 1);
    // Every publish is accounted for, exactly once.
    wait_until("every publish accounted for", || {
        let b = broker(&a);
        b.published.load(Relaxed)
            + b.publish_dropped.load(Relaxed)
            + b.publish_unconfirmed.load(Relaxed)
            == n as u64
            && b.queued.load(Relaxed) == 0
    });
    a.shutdown();
    a.join().unwrap();
}

#[test]
fn serve_processes_survive_one_killed_with_sigkill() {
    use std::process::{Command, Stdio};
    let redis = RedisServer::start();
    let mut children: Vec<_> = (0..3)
        .map(|_| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_ringws"))
                .args(["serve", "--mode", "pubsub", "--port", "0", "--workers", "1"])
                .args(["--no-pin", "--broker", &redis.url()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let addr = common::listen_addr(&mut c);
            (c, addr)
        })
        .collect();
    let mut subs: Vec<Client> = children
        .iter()
        .map(|(_, addr)| {
            let mut c = Client::connect(*addr).unwrap();
            c.send_text("sub news").unwrap();
            assert_eq!(c.recv().unwrap(), Event::Text("ok sub news".into()));
            c
        })
        .collect();
    redis.wait_numsub(CHANNEL, 3);
    let mut p0 = Client::connect(children[0].1).unwrap();
    p0.send_text("pub news before").unwrap();
    for s in &mut subs {
        assert_eq!(s.recv().unwrap(), Event::Text("before".into()));
    }
    let (mut dead, _) = children.pop().unwrap();
    dead.kill().unwrap(); // SIGKILL
    dead.wait().unwrap();
    subs.pop();
    redis.wait_numsub(CHANNEL, 2);
    p0.send_text("pub news after").unwrap();
    let mut p1 = Client::connect(children[1].1).unwrap();
    p1.send_text("pub news from-1").unwrap();
    for s in &mut subs {
        let mut got = vec![s.recv().unwrap(), s.recv().unwrap()];
        got.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            got,
            vec![Event::Text("after".into()), Event::Text("from-1".into())]
        );
    }
    drop((subs, p0, p1));
    for (mut c, _) in children {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        assert!(c.wait().unwrap().success());
    }
}

#[test]
fn topics_spread_over_two_redis_servers_by_consistent_hash() {
    use ringws::broker::hash::shard_of;
    let redis = [RedisServer::start(), RedisServer::start()];
    let urls: Vec<String> = redis.iter().map(RedisServer::url).collect();
    let a = node(urls.clone(), |_| {});
    let b = node(urls, |_| {});
    let topics: Vec<String> = (0..12).map(|i| format!("topic{i}")).collect();
    let mut s = Client::connect(b.local_addr()).unwrap();
    for t in &topics {
        s.send_text(&format!("sub {t}")).unwrap();
        assert_eq!(s.recv().unwrap(), Event::Text(format!("ok sub {t}")));
    }
    let mut on = [0, 0];
    for t in &topics {
        let home = shard_of(t, 2);
        on[home] += 1;
        let channel = format!("ringws:t.{t}");
        redis[home].wait_numsub(&channel, 1);
        assert_eq!(redis[1 - home].numsub(&channel), 0, "{t} only on its shard");
    }
    assert!(on[0] > 0 && on[1] > 0, "12 topics on one shard: {on:?}");
    let mut p = Client::connect(a.local_addr()).unwrap();
    for t in &topics {
        p.send_text(&format!("pub {t} {t}")).unwrap();
    }
    // Each topic's own order holds; across shards the arrival order may differ.
    let mut got: Vec<String> = (0..topics.len())
        .map(|_| match s.recv().unwrap() {
            Event::Text(t) => t,
            other => panic!("{other:?}"),
        })
        .collect();
    got.sort();
    let mut want = topics.clone();
    want.sort();
    assert_eq!(got, want);
    // Unsubscribing the last local subscriber leaves the channel on Redis.
    s.send_text("unsub topic0").unwrap();
    assert_eq!(s.recv().unwrap(), Event::Text("ok unsub topic0".into()));
    redis[shard_of("topic0", 2)].wait_numsub("ringws:t.topic0", 0);
    for n in [a, b] {
        n.shutdown();
        n.join().unwrap();
    }
}

/// Two nodes on `redis` with the history in it (`messages` per topic), their links up.
fn history_pair(redis: &RedisServer, messages: usize) -> (ServerHandle, ServerHandle) {
    let history = |c: &mut Config| c.history_messages_max = messages;
    let a = node(vec![redis.url()], history);
    let b = node(vec![redis.url()], history);
    wait_until("links up", || broker(&a).all_up() && broker(&b).all_up());
    (a, b)
}

/// A live positioned subscriber on `node` (alone on the channel), a publisher there, and the
/// first three messages (`0-0`..`0-2`) as the subscriber got them.
fn three_published(
    redis: &RedisServer,
    node: &ServerHandle,
) -> (Client, Client, Vec<(ringws::history::Position, String)>) {
    let (mut sub, answer) = psub(node, None);
    assert_eq!(answer, "ok psub news 0");
    redis.wait_numsub(CHANNEL, 1);
    let mut publisher = Client::connect(node.local_addr()).unwrap();
    for i in 0..3 {
        publisher.send_text(&format!("pub news 0-{i}")).unwrap();
    }
    let got = (0..3).map(|_| positioned(&text(&mut sub))).collect();
    (sub, publisher, got)
}

/// The next text message (the heartbeat's pings are skipped; a safety net of 30 s, so that a
/// message that never comes fails the test instead of hanging it).
fn text(c: &mut Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no text message within 30 s");
        match c.recv().unwrap() {
            Event::Text(t) => break t,
            Event::Ping(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// A positioned message: its position and payload.
fn positioned(t: &str) -> (ringws::history::Position, String) {
    let (p, payload) = t.split_once(' ').expect("<position> <payload>");
    (p.parse().expect("a position"), payload.to_string())
}

/// `psub <topic> [<position>]` on a new connection to `node`; the connection and the answer.
fn psub(node: &ServerHandle, from: Option<ringws::history::Position>) -> (Client, String) {
    let mut c = Client::connect(node.local_addr()).unwrap();
    match from {
        Some(p) => c.send_text(&format!("psub news {p}")).unwrap(),
        None => c.send_text("psub news").unwrap(),
    }
    let answer = text(&mut c);
    (c, answer)
}

/// Checks a positioned stream: one epoch, offsets `1..=n` each once and in order, and every
/// publisher's messages (`"<p>-<i>"`) each once and in order. Returns the count.
fn assert_whole(got: &[(ringws::history::Position, String)], publishers: usize, per_pub: usize) {
    let epoch = got[0].0.epoch;
    for (k, (p, _)) in got.iter().enumerate() {
        assert_eq!(
            (p.epoch, p.offset),
            (epoch, k as u64 + 1),
            "message {k}: offsets run 1, 2, 3... with no gap or duplicate"
        );
    }
    let mut per: HashMap<usize, Vec<usize>> = HashMap::new();
    for (_, t) in got {
        let (p, i) = t.split_once('-').unwrap();
        per.entry(p.parse().unwrap())
            .or_default()
            .push(i.parse().unwrap());
    }
    assert_eq!(per.len(), publishers);
    for (p, seq) in per {
        assert_eq!(
            seq,
            (0..per_pub).collect::<Vec<_>>(),
            "publisher {p}: every message once, in order"
        );
    }
}

/// With a broker and history on, the broker keeps one history for every node (Redis Streams):
/// a subscriber that left node A resumes on node B while two publishers (one per node) keep
/// publishing, and gets every message exactly once, in order, at one offset per message; B
/// had no subscriber of the topic before, so the resume also covers the subscription race.
#[test]
fn shared_history_a_subscriber_that_left_node_a_resumes_on_node_b_without_loss() {
    let redis = RedisServer::start();
    let (a, b) = history_pair(&redis, 100_000);
    let (mut sub, answer) = psub(&a, None);
    assert_eq!(answer, "ok psub news 0");
    redis.wait_numsub(CHANNEL, 1);
    let per_pub = 1500;
    let publishers: Vec<_> = [&a, &b]
        .iter()
        .enumerate()
        .map(|(p, n)| {
            let mut c = Client::connect(n.local_addr()).unwrap();
            std::thread::spawn(move || {
                for i in 0..per_pub {
                    c.send_text(&format!("pub news {p}-{i}")).unwrap();
                    std::thread::sleep(Duration::from_micros(300));
                }
                c
            })
        })
        .collect();
    let mut got: Vec<_> = (0..400).map(|_| positioned(&text(&mut sub))).collect();
    drop(sub);
    // Away for a while: the publishes go on.
    std::thread::sleep(Duration::from_millis(150));
    let last = got.last().unwrap().0;
    let (mut back, answer) = psub(&b, Some(last));
    let replayed: usize = answer
        .strip_prefix("ok psub news ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("resumed without a gap, not {answer:?}"));
    assert!(replayed > 0, "messages were published while it was away");
    let total = 2 * per_pub;
    while got.len() < total {
        got.push(positioned(&text(&mut back)));
    }
    let publishers: Vec<Client> = publishers.into_iter().map(|t| t.join().unwrap()).collect();
    assert_whole(&got, 2, per_pub);
    let m = broker(&b);
    assert_eq!(m.replays.load(Relaxed), 1);
    assert_eq!(m.replay_gaps.load(Relaxed), 0);
    for n in [&a, &b] {
        assert_eq!(counter(n, |b| b.lost.load(Relaxed)), 0);
    }
    // And the other way: A resumes a position that B's subscriber was given.
    let (mut again, answer) = psub(&a, Some(got[total - 3].0));
    assert_eq!(answer, "ok psub news 2");
    let tail: Vec<_> = (0..2).map(|_| positioned(&text(&mut again))).collect();
    assert_eq!(tail, got[total - 2..]);
    // Gone before the shutdown (which waits for open clients to answer its Close).
    drop((back, again, publishers));
    for n in [a, b] {
        n.shutdown();
        n.join().unwrap();
    }
}

/// The subscribe link to Redis is cut (Redis kills it) while a publisher goes on: the
/// positioned subscriber on the other node still gets every message once and in order, since
/// what was published while the link was down is fetched from the history (counted as
/// repaired), and nothing is counted lost.
#[test]
fn shared_history_repairs_what_a_cut_subscribe_link_missed() {
    let redis = RedisServer::start();
    let (a, b) = history_pair(&redis, 100_000);
    let (mut sub, answer) = psub(&b, None);
    assert_eq!(answer, "ok psub news 0");
    redis.wait_numsub(CHANNEL, 1);
    let per_pub = 1500;
    let mut publisher = Client::connect(a.local_addr()).unwrap();
    let url = redis.url();
    let sender = std::thread::spawn(move || {
        for i in 0..per_pub {
            if i == 500 {
                let mut c = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let killed: i64 = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("pubsub")
                    .query(&mut c)
                    .unwrap();
                // Both nodes' subscribe links (A's listens for broadcasts).
                assert_eq!(killed, 2, "the subscribe links");
            }
            publisher.send_text(&format!("pub news 0-{i}")).unwrap();
            std::thread::sleep(Duration::from_micros(300));
        }
        publisher
    });
    let got: Vec<_> = (0..per_pub).map(|_| positioned(&text(&mut sub))).collect();
    let publisher = sender.join().unwrap();
    assert_whole(&got, 1, per_pub);
    let m = broker(&b);
    assert!(m.reconnects.load(Relaxed) >= 1, "the link was cut");
    assert!(
        m.repaired.load(Relaxed) > 0,
        "nothing was published while the link was down: the test did not test"
    );
    assert_eq!(m.lost.load(Relaxed), 0);
    drop((sub, publisher));
    for n in [a, b] {
        n.shutdown();
        n.join().unwrap();
    }
}

/// Redis restarted without persistence lost the history: a position from before is of an
/// epoch Redis no longer knows, so the resume is a gap (never a silent loss), and the stream
/// goes on under a new epoch.
#[test]
fn shared_history_lost_by_a_redis_restart_is_a_gap_and_a_new_epoch() {
    let mut redis = RedisServer::start();
    let history = |c: &mut Config| c.history_messages_max = 1000;
    let a = node(vec![redis.url()], history);
    wait_until("links up", || broker(&a).all_up());
    let (sub, mut publisher, before) = three_published(&redis, &a);
    assert_whole(&before, 1, 3);
    drop(sub);
    // Before the restart the position resumes (nothing missed).
    let (c, answer) = psub(&a, Some(before[2].0));
    assert_eq!(answer, "ok psub news 0");
    drop(c);
    redis.kill();
    // While Redis is down a resume cannot be checked: the answer is a gap, not a wait.
    let (mut during, answer) = psub(&a, Some(before[2].0));
    assert_eq!(
        answer, "ok psub news gap",
        "no Redis: it must say so, and at once"
    );
    redis.restart();
    wait_until("links up", || broker(&a).all_up());
    let (mut resumed, answer) = psub(&a, Some(before[2].0));
    assert_eq!(
        answer, "ok psub news gap",
        "Redis lost the history: it must say so"
    );
    assert!(broker(&a).replay_gaps.load(Relaxed) >= 1);
    // A publish thread learns of the restart when it next publishes: publish until one
    // arrives, then it carries a new epoch.
    redis.wait_numsub(CHANNEL, 1);
    let mut i = 0;
    let got = loop {
        publisher.send_text(&format!("pub news 1-{i}")).unwrap();
        i += 1;
        resumed
            .stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match resumed.recv() {
            Ok(Event::Text(t)) => break positioned(&t),
            Ok(Event::Ping(_)) | Err(_) => assert!(i < 100, "nothing arrived after the restart"),
            Ok(other) => panic!("{other:?}"),
        }
    };
    assert_ne!(
        got.0.epoch, before[0].0.epoch,
        "a new epoch after the history was lost"
    );
    assert!(got.1.starts_with("1-"));
    // The one that resumed during the outage is live too.
    assert_eq!(positioned(&text(&mut during)).0.epoch, got.0.epoch);
    drop((resumed, during, publisher));
    a.shutdown();
    a.join().unwrap();
}

/// Resumes waiting for Redis are bounded per worker (`history_resumes_pending_per_worker_max`):
/// with Redis stopped (SIGSTOP) one resume waits, and the next is answered as a gap at once
/// instead of queueing up replays without bound. Once Redis goes on, the first is answered.
#[test]
fn shared_history_bounds_the_resumes_waiting_for_redis() {
    let redis = RedisServer::start();
    let a = node(vec![redis.url()], |c| {
        c.workers = 1;
        c.history_messages_max = 100;
        c.history_resumes_pending_per_worker_max = 1;
    });
    wait_until("links up", || broker(&a).all_up());
    let (mut sub, answer) = psub(&a, None);
    assert_eq!(answer, "ok psub news 0");
    redis.wait_numsub(CHANNEL, 1);
    let mut publisher = Client::connect(a.local_addr()).unwrap();
    publisher.send_text("pub news 0-0").unwrap();
    let (first, _) = positioned(&text(&mut sub));
    redis.signal(libc::SIGSTOP);
    let mut waiting = Client::connect(a.local_addr()).unwrap();
    waiting.send_text(&format!("psub news {first}")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (c, answer) = psub(&a, Some(first));
    assert_eq!(
        answer, "ok psub news gap",
        "one is waiting already: no second"
    );
    // Answered by the worker, not by a replay that failed (Redis has answered nothing yet).
    assert_eq!(broker(&a).replays.load(Relaxed), 0);
    redis.signal(libc::SIGCONT);
    let answer = text(&mut waiting);
    assert!(answer.starts_with("ok psub news "), "{answer}");
    drop((sub, publisher, waiting, c));
    a.shutdown();
    a.join().unwrap();
}

/// A subscriber that resumed on a quiet topic (nothing delivered live on its node yet) and
/// whose node's subscribe link is then cut: what is published meanwhile is repaired from the
/// replay's position, not silently skipped.
#[test]
fn shared_history_repairs_a_quiet_topic_after_a_cut_link() {
    let redis = RedisServer::start();
    let (a, b) = history_pair(&redis, 1000);
    let (watcher, mut publisher, seen) = three_published(&redis, &a);
    let (mut quiet, answer) = psub(&b, Some(seen[2].0));
    assert_eq!(answer, "ok psub news 0");
    redis.wait_numsub(CHANNEL, 2);
    let mut c = redis::Client::open(redis.url().as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut c)
        .unwrap();
    // At once, while B's link is down (it waits at least 50 ms before reconnecting).
    for i in 3..23 {
        publisher.send_text(&format!("pub news 0-{i}")).unwrap();
    }
    let got: Vec<_> = (0..20).map(|_| positioned(&text(&mut quiet))).collect();
    for (k, (p, t)) in got.iter().enumerate() {
        assert_eq!(
            (p.epoch, p.offset, t.as_str()),
            (
                seen[0].0.epoch,
                k as u64 + 4,
                format!("0-{}", k + 3).as_str()
            ),
            "every message once, in order, none skipped"
        );
    }
    assert!(
        broker(&b).repaired.load(Relaxed) > 0,
        "B's link was back before the publishes: the test did not test"
    );
    assert_eq!(broker(&b).lost.load(Relaxed), 0);
    drop((watcher, quiet, publisher));
    for n in [a, b] {
        n.shutdown();
        n.join().unwrap();
    }
}
