//! No message lost: clients come and go at random (seeded), some leaving cleanly, some vanishing
//! with a FIN or a reset in the middle of their stream, over two workers. Every message sent on
//! a connection that stayed open until its clean close is echoed back exactly once, in order,
//! with nothing else before the Close. The gauges come back to their baseline.
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use common::{Client, Event, serve, test_config};
use hostile::{Rng, assert_baseline, reset};
use ringws::Config;
use ringws::modes::Echo;
use ringws::proto::frame::OpCode;

const THREADS: u64 = 6;
const SESSIONS: u64 = 60;
const MASK: Option<[u8; 4]> = Some([0x11, 0x22, 0x33, 0x44]);

/// One message: its kind and bytes; the text ones are ASCII.
fn message(rng: &mut Rng, tag: &str) -> Event {
    let size = match rng.below(20) {
        0 => 60_000 + rng.below(20_000) as usize,
        1..=4 => rng.below(4_000) as usize,
        _ => rng.below(200) as usize,
    };
    let filler = (0..size).map(|i| b'a' + ((i as u64 + rng.below(3)) % 26) as u8);
    let mut bytes = tag.as_bytes().to_vec();
    bytes.extend(filler);
    if rng.chance(50) {
        Event::Text(String::from_utf8(bytes).unwrap())
    } else {
        Event::Binary(bytes)
    }
}

/// Sends one message, as one frame or in up to four fragments.
fn send(c: &mut Client, rng: &mut Rng, msg: &Event) {
    let (op, bytes) = match msg {
        Event::Text(t) => (OpCode::Text, t.as_bytes()),
        Event::Binary(b) => (OpCode::Binary, &b[..]),
        _ => unreachable!(),
    };
    let pieces = 1 + rng.below(4) as usize;
    let step = bytes.len().div_ceil(pieces).max(1);
    let chunks: Vec<&[u8]> = if bytes.is_empty() {
        vec![bytes]
    } else {
        bytes.chunks(step).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let op = if i == 0 { op } else { OpCode::Continuation };
        let _ = c.send_frame(i + 1 == chunks.len(), op, chunk, MASK);
    }
}

/// One session: true if it stayed open to the end (and was checked).
fn session(addr: std::net::SocketAddr, rng: &mut Rng, t: u64, s: u64) -> bool {
    let mut c = Client::connect(addr).unwrap();
    let count = 1 + rng.below(40);
    let fate = rng.below(100);
    let leave_at = if fate < 70 { count } else { rng.below(count) };
    let mut sent = Vec::new();
    for i in 0..leave_at {
        let msg = message(rng, &format!("{t}/{s}/{i}:"));
        send(&mut c, rng, &msg);
        sent.push(msg);
        // Now and then read what is due so far (mixing pipelined and lock-step traffic).
        if fate < 70 && rng.chance(20) {
            for want in sent.drain(..) {
                assert_eq!(c.recv().unwrap(), want, "thread {t} session {s}");
            }
        }
    }
    match fate {
        0..70 => {
            for want in sent {
                assert_eq!(c.recv().unwrap(), want, "thread {t} session {s}");
            }
            c.close(1000, "").unwrap();
            let next = c.recv().unwrap();
            assert_eq!(
                next,
                Event::Close(1000, String::new()),
                "thread {t} session {s}"
            );
            c.read_to_eof().unwrap();
            true
        }
        70..85 => false, // dropped: FIN without a Close
        _ => {
            reset(c.stream.try_clone().unwrap());
            false
        }
    }
}

#[test]
fn clients_come_and_go_and_no_message_is_lost() {
    let config = Config {
        workers: 2,
        close_timeout_ms: 1000,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let seed = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc4u64);
    eprintln!("churn seed {seed} (set CHURN_SEED to replay)");
    let clean = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let clean = clean.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(t + 1));
                for s in 0..SESSIONS {
                    if session(addr, &mut rng, t, s) {
                        clean.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let clean = clean.load(Relaxed);
    assert!(
        clean > 0,
        "no session stayed open: the check checked nothing"
    );
    let m = hostile::metrics(addr);
    eprintln!(
        "{clean} of {} sessions stayed open and were checked; the server received {} messages",
        THREADS * SESSIONS,
        m["ringws_messages_received_total"]
    );
    assert_eq!(m["ringws_closes_total{code=\"1000\"}"], clean);
    assert_baseline(addr, "churn");
    server.shutdown();
    server.join().unwrap();
}
