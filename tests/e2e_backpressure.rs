//! A client that never reads: its send queue hits the limit.
mod common;

use std::sync::mpsc;

use common::{Client, Event, metric, serve, test_config};
use ringws::{Backpressure, BackpressurePolicy, Config, Conn, ConnId, Handler, Message};

struct Reporter(mpsc::Sender<Backpressure>, mpsc::Sender<ConnId>);

impl Handler for Reporter {
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        conn.send(msg);
    }
    fn on_backpressure(&mut self, _id: ConnId, _queued: usize, what: Backpressure) {
        let _ = self.0.send(what);
    }
    fn on_drain(&mut self, conn: &mut Conn<'_>) {
        let _ = self.1.send(conn.id());
    }
}

fn config(policy: BackpressurePolicy) -> Config {
    Config {
        send_queue_bytes_max: 64 * 1024,
        backpressure: policy,
        close_timeout_ms: 60_000,
        ..test_config()
    }
}

/// Sends 16 KiB messages without reading until the server reports backpressure.
fn flood(c: &mut Client, rx: &mpsc::Receiver<Backpressure>) -> (Backpressure, usize) {
    let msg = vec![b'x'; 16 * 1024];
    for sent in 1.. {
        c.send_binary(&msg).unwrap();
        if let Ok(what) = rx.try_recv() {
            return (what, sent);
        }
        assert!(sent < 100_000, "no backpressure after {sent} messages");
    }
    unreachable!()
}

#[test]
fn never_reading_client_is_closed_with_1008() {
    let (tx, rx) = mpsc::channel();
    let (dtx, _drx) = mpsc::channel();
    let server = serve(config(BackpressurePolicy::Close), move |_| {
        Reporter(tx.clone(), dtx.clone())
    });
    let addr = server.local_addr();
    let mut c = Client::connect(addr).unwrap();
    let (what, _) = flood(&mut c, &rx);
    assert_eq!(what, Backpressure::Closing);
    // Now read: the echoes that fit, then the Close with 1008.
    let (code, _) = c.recv_close().unwrap();
    assert_eq!(code, 1008);
    assert_eq!(metric(addr, "ringws_backpressure_closes_total"), 1);
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn drop_policy_drops_and_keeps_the_connection() {
    let (tx, rx) = mpsc::channel();
    let (dtx, drx) = mpsc::channel();
    let server = serve(config(BackpressurePolicy::Drop), move |_| {
        Reporter(tx.clone(), dtx.clone())
    });
    let addr = server.local_addr();
    let mut c = Client::connect(addr).unwrap();
    let (what, sent) = flood(&mut c, &rx);
    assert_eq!(what, Backpressure::Dropped);
    c.send_text("after").unwrap();
    let mut echoed = 0;
    loop {
        match c.recv().unwrap() {
            Event::Binary(_) => echoed += 1,
            Event::Text(t) => break assert_eq!(t, "after"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        echoed < sent,
        "some messages were dropped ({echoed} of {sent} echoed)"
    );
    assert!(metric(addr, "ringws_backpressure_drops_total") >= 1);
    // The queue emptied once the client read: on_drain fired.
    drx.recv_timeout(common::READ_TIMEOUT)
        .expect("on_drain after the queue emptied");
    drop(c);
    server.shutdown();
    server.join().unwrap();
}
