//! Backpressure (#16): a peer that does not read its echoes is read less (its reading pauses at
//! the high mark, TCP slows it down, nothing is lost); a peer whose queue grows from sources it
//! does not control (broadcasts) is closed with 1008 at the send queue limit, or has those
//! messages dropped.
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::Duration;

use common::{Client, Event, READ_TIMEOUT, metric, serve, test_config};
use hostile::{eventually, raw_frame, raw_upgrade, read_frame};
use ringws::{Backpressure, BackpressurePolicy, Config, Conn, ConnId, Handler, Message};

const HIGH: usize = 256 * 1024;
const LOW: usize = 64 * 1024;
const MSG: usize = 16 * 1024;

fn config(policy: BackpressurePolicy) -> Config {
    Config {
        send_queue_bytes_max: 1024 * 1024,
        send_queue_high_bytes: HIGH,
        send_queue_low_bytes: LOW,
        backpressure: policy,
        close_timeout_ms: 60_000,
        ..test_config()
    }
}

/// Echoes, and records the largest queue it saw after queueing an echo.
struct Echoer(Arc<AtomicUsize>);

impl Handler for Echoer {
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        conn.send(msg);
        self.0.fetch_max(conn.queued_bytes(), Relaxed);
    }
}

#[test]
fn a_peer_that_does_not_read_its_echoes_is_paused_not_closed_and_loses_nothing() {
    let most = Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    let server = serve(config(BackpressurePolicy::Close), move |_| {
        Echoer(seen.clone())
    });
    let addr = server.local_addr();
    let paused = || server.metrics().total(|w| &w.reads_paused);
    let received = || server.metrics().total(|w| &w.bytes_received);
    let mut s = raw_upgrade(addr).unwrap();
    // 64 MiB: more than the kernel's socket buffers on both sides (loopback autotunes them to
    // a few MiB each) and the server's queue together.
    const COUNT: u32 = 4096;
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for i in 0..COUNT {
            let mut payload = vec![(i % 251) as u8; MSG];
            payload[..4].copy_from_slice(&i.to_be_bytes());
            w.write_all(&raw_frame(0x82, &payload, Some([1, 2, 3, 4])))
                .unwrap();
        }
    });
    assert!(
        eventually(READ_TIMEOUT, || paused() == 1),
        "reading never paused"
    );
    // While paused the server reads nothing more: the writer is blocked by TCP.
    std::thread::sleep(Duration::from_millis(300));
    let before = received();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received(), before, "the server kept reading while paused");
    assert!(!writer.is_finished(), "the writer should be blocked");
    assert!(before < u64::from(COUNT) * MSG as u64 / 2);
    // Now read: every echo arrives, in order; reading resumes and the writer finishes.
    for i in 0..COUNT {
        let (first, payload) = read_frame(&mut s).unwrap();
        assert_eq!(
            first,
            0x82,
            "echo {i}: {:?}",
            String::from_utf8_lossy(&payload)
        );
        assert_eq!(payload.len(), MSG);
        assert_eq!(u32::from_be_bytes(payload[..4].try_into().unwrap()), i);
        assert!(payload[4..].iter().all(|&b| b == (i % 251) as u8));
    }
    writer.join().unwrap();
    let most = most.load(Relaxed);
    eprintln!("largest queue seen: {most} B (high mark {HIGH} B)");
    // Past the high mark by at most the echoes of what one loop turn received before the
    // pause took effect: at most the worker's ring of receive buffers.
    let cfg = config(BackpressurePolicy::Close);
    let ring = usize::from(cfg.recv_buffers_per_worker) * cfg.recv_buffer_bytes as usize;
    assert!(most <= HIGH + ring + MSG, "queue reached {most} B");
    assert_eq!(metric(addr, "ringws_backpressure_closes_total"), 0);
    assert!(metric(addr, "ringws_reads_pauses_total") >= 1);
    assert!(eventually(READ_TIMEOUT, || paused() == 0));
    drop(s);
    hostile::assert_baseline(addr, "paused echo");
    server.shutdown();
    server.join().unwrap();
}

struct Reporter(mpsc::Sender<(ConnId, Backpressure)>);

impl Handler for Reporter {
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        conn.broadcast(msg);
    }
    fn on_backpressure(&mut self, id: ConnId, _queued: usize, what: Backpressure) {
        let _ = self.0.send((id, what));
    }
}

/// A connection that never reads, and a sender whose broadcasts it receives; the sender reads
/// its own copies. Returns once the server reports backpressure on the non-reader.
fn broadcast_to_a_non_reader(
    addr: std::net::SocketAddr,
    rx: &mpsc::Receiver<(ConnId, Backpressure)>,
) -> (Client, Client, Backpressure, usize) {
    let quiet = Client::connect(addr).unwrap();
    let mut sender = Client::connect(addr).unwrap();
    let msg = vec![b'x'; MSG];
    for sent in 1.. {
        sender.send_binary(&msg).unwrap();
        assert!(matches!(sender.recv().unwrap(), Event::Binary(_)));
        if let Ok((_, what)) = rx.try_recv() {
            return (quiet, sender, what, sent);
        }
        assert!(sent < 100_000, "no backpressure after {sent} broadcasts");
    }
    unreachable!()
}

#[test]
fn a_non_reader_fed_by_broadcasts_is_closed_with_1008() {
    let (tx, rx) = mpsc::channel();
    let server = serve(config(BackpressurePolicy::Close), move |_| {
        Reporter(tx.clone())
    });
    let addr = server.local_addr();
    let (mut quiet, sender, what, _) = broadcast_to_a_non_reader(addr, &rx);
    assert_eq!(what, Backpressure::Closing);
    // Now read: the broadcasts that fit, then the Close with 1008.
    let (code, _) = quiet.recv_close().unwrap();
    assert_eq!(code, 1008);
    assert_eq!(metric(addr, "ringws_backpressure_closes_total"), 1);
    drop((quiet, sender));
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn drop_policy_drops_broadcasts_and_keeps_the_connection() {
    let (tx, rx) = mpsc::channel();
    let server = serve(config(BackpressurePolicy::Drop), move |_| {
        Reporter(tx.clone())
    });
    let addr = server.local_addr();
    let (mut quiet, mut sender, what, sent) = broadcast_to_a_non_reader(addr, &rx);
    assert_eq!(what, Backpressure::Dropped);
    sender.send_text("after").unwrap();
    let mut got = 0;
    loop {
        match quiet.recv().unwrap() {
            Event::Binary(_) => got += 1,
            Event::Text(t) => break assert_eq!(t, "after"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        got < sent,
        "some broadcasts were dropped ({got} of {sent} arrived)"
    );
    assert!(metric(addr, "ringws_backpressure_drops_total") >= 1);
    drop((quiet, sender));
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn the_marks_are_validated() {
    let bad = Config {
        send_queue_high_bytes: 2 << 20,
        send_queue_bytes_max: 1 << 20,
        ..Config::default()
    };
    assert_eq!(bad.validate().unwrap_err().field, "send_queue_high_bytes");
    let bad = Config {
        send_queue_low_bytes: 1 << 20,
        send_queue_high_bytes: 1 << 20,
        ..Config::default()
    };
    assert_eq!(bad.validate().unwrap_err().field, "send_queue_low_bytes");
}
