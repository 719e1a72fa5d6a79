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

/// History with a broker, as it stands: each node gives every message it delivers (its own and
/// the other nodes') a position of its own. A positioned subscriber on node B gets node A's
/// publishes and resumes on B without loss; a position from B presented to A is a gap; and once
/// B had no subscriber left (so it left the Redis channel and may have missed messages) its old
/// positions are a gap too. Never a silent loss. (One history shared in Redis Streams is the
/// remaining part of issue #14.)
#[test]
fn positioned_subscribers_across_nodes_resume_on_their_node_and_see_a_gap_elsewhere() {
    let redis = RedisServer::start();
    let history = |c: &mut Config| c.history_messages_max = 1000;
    let a = node(vec![redis.url()], history);
    let b = node(vec![redis.url()], history);
    let text = |c: &mut Client| loop {
        match c.recv().unwrap() {
            Event::Text(t) => break t,
            Event::Ping(_) => {}
            other => panic!("{other:?}"),
        }
    };
    let mut keeper = subscriber(&b, "news");
    let mut sub = Client::connect(b.local_addr()).unwrap();
    sub.send_text("psub news").unwrap();
    assert_eq!(text(&mut sub), "ok psub news 0");
    wait_until("links up", || broker(&a).all_up() && broker(&b).all_up());
    redis.wait_numsub(CHANNEL, 1);
    let mut publisher = Client::connect(a.local_addr()).unwrap();
    publisher.send_text("pub news m0").unwrap();
    let first = text(&mut sub);
    let (pos, payload) = first.split_once(' ').unwrap();
    assert_eq!(payload, "m0");
    assert_eq!(text(&mut keeper), "m0");
    drop(sub);
    for i in 1..=3 {
        publisher.send_text(&format!("pub news m{i}")).unwrap();
    }
    for i in 1..=3 {
        assert_eq!(text(&mut keeper), format!("m{i}"), "B received them");
    }
    let mut back = Client::connect(b.local_addr()).unwrap();
    back.send_text(&format!("psub news {pos}")).unwrap();
    assert_eq!(text(&mut back), "ok psub news 3");
    let got: Vec<String> = (0..3).map(|_| text(&mut back)).collect();
    let payloads: Vec<&str> = got.iter().map(|t| t.split_once(' ').unwrap().1).collect();
    assert_eq!(
        payloads,
        ["m1", "m2", "m3"],
        "resumed on B: every message once, in order"
    );
    let last = got[2].split_once(' ').unwrap().0.to_string();

    // B's position means nothing on A: a gap, then what A holds.
    let mut elsewhere = Client::connect(a.local_addr()).unwrap();
    elsewhere.send_text(&format!("psub news {pos}")).unwrap();
    assert_eq!(text(&mut elsewhere), "ok psub news gap");
    redis.wait_numsub(CHANNEL, 2);

    // Everyone leaves B: it unsubscribes from Redis, and a publish meanwhile never reaches it.
    drop((keeper, back));
    redis.wait_numsub(CHANNEL, 1);
    publisher.send_text("pub news m4").unwrap();
    // A replayed what it holds (its own m0..m3) after the gap, then m4 live.
    let on_a: Vec<String> = (0..5)
        .map(|_| text(&mut elsewhere).split_once(' ').unwrap().1.to_string())
        .collect();
    assert_eq!(on_a, ["m0", "m1", "m2", "m3", "m4"]);
    let mut later = Client::connect(b.local_addr()).unwrap();
    later.send_text(&format!("psub news {last}")).unwrap();
    assert_eq!(
        text(&mut later),
        "ok psub news gap",
        "B may have missed m4: it must say so"
    );
    drop((elsewhere, later, publisher));
    for n in [a, b] {
        n.shutdown();
        n.join().unwrap();
    }
}
