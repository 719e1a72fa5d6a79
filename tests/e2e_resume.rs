//! Topic history and resume on one node (`psub`, `Conn::subscribe_from`): a subscriber that drops
//! in the middle of a stream and comes back gets every message exactly once, in order.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Client, Event, serve, test_config};
use ringws::modes::PubSub;
use ringws::{Config, Message, Position};

fn history(messages: usize) -> Config {
    Config {
        workers: 2,
        history_messages_max: messages,
        ..test_config()
    }
}

/// The next text message, skipping pings (for at most the read timeout in all, so that a lost
/// message fails the test instead of hanging it between heartbeats).
fn text(c: &mut Client) -> String {
    let deadline = std::time::Instant::now() + common::READ_TIMEOUT;
    loop {
        assert!(std::time::Instant::now() < deadline, "no text message");
        match c.recv().unwrap() {
            Event::Text(t) => return t,
            Event::Ping(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// A positioned delivery: `<position> <payload>`.
fn positioned(t: &str) -> (Position, String) {
    let (p, payload) = t
        .split_once(' ')
        .unwrap_or_else(|| panic!("not positioned: {t:?}"));
    (p.parse().unwrap(), payload.to_string())
}

#[test]
fn a_resumed_subscriber_gets_every_message_once_in_order() {
    const N: usize = 3000;
    let server = serve(history(10_000), |_| PubSub);
    let addr = server.local_addr();
    let mut sub = Client::connect(addr).unwrap();
    sub.send_text("psub t").unwrap();
    assert_eq!(text(&mut sub), "ok psub t 0");

    // Two publishers at once: one from a thread through the Publisher, one a WebSocket client.
    let done = Arc::new(AtomicBool::new(false));
    let p = server.publisher();
    let from_thread = std::thread::spawn(move || {
        for i in 0..N {
            p.publish("t", Message::Text(&format!("a{i}")));
            if i.is_multiple_of(16) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    });
    let from_client = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(addr).unwrap();
            for i in 0..N {
                c.send_text(&format!("pub t b{i}")).unwrap();
                if i.is_multiple_of(16) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };

    let mut got: Vec<(Position, String)> = Vec::new();
    // Read a part of the stream, drop the connection without a Close, come back, resume; twice.
    for cut in [700, 2500] {
        while got.len() < cut {
            got.push(positioned(&text(&mut sub)));
        }
        drop(sub);
        std::thread::sleep(std::time::Duration::from_millis(20));
        sub = Client::connect(addr).unwrap();
        let last = got.last().unwrap().0;
        sub.send_text(&format!("psub t {last}")).unwrap();
        let answer = text(&mut sub);
        let replayed: usize = answer
            .strip_prefix("ok psub t ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected a replay count, got {answer:?}"));
        // What was published while it was away, at least; more may follow live.
        let _ = replayed;
    }
    while got.len() < 2 * N {
        got.push(positioned(&text(&mut sub)));
    }
    done.store(true, Ordering::Relaxed);
    from_thread.join().unwrap();
    from_client.join().unwrap();

    // Offsets are consecutive from 1, in one epoch: nothing lost, nothing twice, in order.
    let epoch = got[0].0.epoch;
    for (i, (p, _)) in got.iter().enumerate() {
        assert_eq!(
            *p,
            Position {
                epoch,
                offset: i as u64 + 1
            },
            "message {i}"
        );
    }
    // Each publisher's messages in its own order, each exactly once.
    for prefix in ["a", "b"] {
        let mine: Vec<usize> = got
            .iter()
            .filter_map(|(_, m)| m.strip_prefix(prefix)?.parse().ok())
            .collect();
        assert_eq!(mine, (0..N).collect::<Vec<_>>(), "publisher {prefix}");
    }
    drop(sub);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn history_past_its_limit_is_a_gap_then_what_is_held() {
    let server = serve(history(5), |_| PubSub);
    let addr = server.local_addr();
    let mut sub = Client::connect(addr).unwrap();
    sub.send_text("psub t").unwrap();
    assert_eq!(text(&mut sub), "ok psub t 0");
    let p = server.publisher();
    for i in 0..20 {
        p.publish("t", Message::Text(&format!("m{i}")));
    }
    let first: Vec<_> = (0..2).map(|_| positioned(&text(&mut sub))).collect();
    assert_eq!(first[1].1, "m1");
    drop(sub);

    // Resume after the 2nd message: 3..=15 are gone (5 kept), so it is a gap, then 16..=20.
    let mut sub = Client::connect(addr).unwrap();
    sub.send_text(&format!("psub t {}", first[1].0)).unwrap();
    assert_eq!(text(&mut sub), "ok psub t gap");
    let held: Vec<_> = (0..5).map(|_| positioned(&text(&mut sub))).collect();
    let offsets: Vec<u64> = held.iter().map(|(p, _)| p.offset).collect();
    assert_eq!(offsets, vec![16, 17, 18, 19, 20]);
    assert_eq!(held[4].1, "m19");

    // Resuming from the newest position is complete and replays nothing; then it is live.
    let mut again = Client::connect(addr).unwrap();
    again.send_text(&format!("psub t {}", held[4].0)).unwrap();
    assert_eq!(text(&mut again), "ok psub t 0");
    p.publish("t", Message::Binary(b"\x00raw"));
    let mut want = format!(
        "{} ",
        Position {
            offset: 21,
            ..held[4].0
        }
    )
    .into_bytes();
    want.extend_from_slice(b"\x00raw");
    assert_eq!(again.recv().unwrap(), Event::Binary(want));

    // A position of another epoch cannot be trusted: a gap, then everything held.
    let mut stranger = Client::connect(addr).unwrap();
    let other_epoch = Position {
        epoch: held[4].0.epoch ^ 1,
        offset: 3,
    };
    stranger
        .send_text(&format!("psub t {other_epoch}"))
        .unwrap();
    assert_eq!(text(&mut stranger), "ok psub t gap");
    let first_held = positioned(&text(&mut stranger)).0;
    assert_eq!(first_held.offset, 17);
    // /metrics counts the three resumes from a position, two of them gaps, on one topic.
    let text = server.metrics().render();
    for line in [
        "ringws_history_topics 1\n",
        "ringws_history_resumes_total 3\n",
        "ringws_history_gaps_total 2\n",
        "ringws_history_evicted_total 0\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    drop((sub, again, stranger));
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn plain_and_positioned_subscribers_side_by_side() {
    let server = serve(history(100), |_| PubSub);
    let addr = server.local_addr();
    let mut plain = Client::connect(addr).unwrap();
    plain.send_text("sub t").unwrap();
    assert_eq!(text(&mut plain), "ok sub t");
    let mut pos = Client::connect(addr).unwrap();
    pos.send_text("psub t").unwrap();
    assert_eq!(text(&mut pos), "ok psub t 0");
    let mut publisher = Client::connect(addr).unwrap();
    publisher.send_text("pub t hello there").unwrap();
    assert_eq!(text(&mut plain), "hello there");
    let (p, payload) = positioned(&text(&mut pos));
    assert_eq!((p.offset, payload.as_str()), (1, "hello there"));
    // psub replaces sub on the same connection (one copy, positioned), and sub replaces psub.
    plain.send_text("psub t").unwrap();
    assert_eq!(text(&mut plain), "ok psub t 0");
    publisher.send_text("pub t second").unwrap();
    assert_eq!(positioned(&text(&mut plain)).1, "second");
    let (p2, _) = positioned(&text(&mut pos));
    assert_eq!(p2.offset, 2);
    pos.send_text("sub t").unwrap();
    assert_eq!(text(&mut pos), "ok sub t");
    publisher.send_text("pub t third").unwrap();
    assert_eq!(text(&mut pos), "third");
    assert_eq!(positioned(&text(&mut plain)).1, "third");
    pos.send_text("unsub t").unwrap();
    assert_eq!(text(&mut pos), "ok unsub t");
    plain.send_text("unsub t").unwrap();
    assert_eq!(text(&mut plain), "ok unsub t");
    publisher.send_text("pub t nobody").unwrap();
    pos.send_text("ping?").unwrap();
    assert!(
        text(&mut pos).starts_with("error"),
        "unsubscribed got a message"
    );
    plain.send_text("ping?").unwrap();
    assert!(
        text(&mut plain).starts_with("error"),
        "unsubscribed got a message"
    );
    drop((plain, pos, publisher));
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn psub_without_history_or_with_a_bad_position_is_an_error() {
    let server = serve(test_config(), |_| PubSub);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_text("psub t").unwrap();
    assert!(text(&mut c).starts_with("error: psub needs history"));
    drop(c);
    server.shutdown();
    server.join().unwrap();

    let server = serve(history(10), |_| PubSub);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_text("psub t 12-x").unwrap();
    assert!(text(&mut c).starts_with("error: psub t: a position is"));
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

/// `sub`: subscribe with positions from now. `pub X`: publish X. `again P`: publish ten messages
/// and, in the same callback, resume from P: the ten are then both in history (replayed) and
/// still waiting in this worker's mailbox as live messages. Each must arrive once.
struct PublishThenResume;

impl ringws::Handler for PublishThenResume {
    fn on_message(&mut self, conn: &mut ringws::Conn<'_>, msg: Message<'_>) {
        let Message::Text(cmd) = msg else { return };
        if cmd == "sub" {
            assert!(conn.subscribe_from("t", None));
            conn.send_text("ok");
        } else if let Some(x) = cmd.strip_prefix("pub ") {
            conn.publish("t", Message::Text(x));
        } else if let Some(p) = cmd.strip_prefix("again ") {
            for i in 1..=10 {
                conn.publish("t", Message::Text(&format!("m{i}")));
            }
            assert!(conn.subscribe_from("t", Some(p.parse().unwrap())));
        }
    }

    fn on_resume(&mut self, conn: &mut ringws::Conn<'_>, _topic: &str, r: ringws::Resume) {
        if r.replayed > 0 || r.gap {
            conn.send_text(&format!("replayed {} gap {}", r.replayed, r.gap));
        }
    }
}

#[test]
fn replay_and_live_overlap_without_duplicates() {
    let server = serve(history(100), |_| PublishThenResume);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_text("sub").unwrap();
    assert_eq!(text(&mut c), "ok");
    c.send_text("pub m0").unwrap();
    let (p0, m0) = positioned(&text(&mut c));
    assert_eq!((p0.offset, m0.as_str()), (1, "m0"));
    c.send_text(&format!("again {p0}")).unwrap();
    assert_eq!(text(&mut c), "replayed 10 gap false");
    for i in 1..=10u64 {
        let (p, m) = positioned(&text(&mut c));
        assert_eq!((p.offset, m), (i + 1, format!("m{i}")));
    }
    c.send_text("pub m11").unwrap();
    let (p, m) = positioned(&text(&mut c));
    assert_eq!(
        (p.offset, m.as_str()),
        (12, "m11"),
        "a replayed message came twice"
    );
    drop(c);
    server.shutdown();
    server.join().unwrap();
}
