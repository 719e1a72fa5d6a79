//! Heartbeats and deadlines on a short config: idle → ping → pong deadline, handshake deadline.
mod common;

use std::sync::mpsc;

use common::{Client, Event, serve, test_config};
use ringws::{Config, Conn, ConnId, Handler, Message};

/// Echoes and reports every close.
struct Recorder(mpsc::Sender<(ConnId, u16)>);

impl Handler for Recorder {
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        conn.send(msg);
    }
    fn on_close(&mut self, id: ConnId, code: u16, _reason: &str) {
        let _ = self.0.send((id, code));
    }
}

fn short() -> Config {
    Config {
        ping_interval_ms: 100,
        pong_timeout_ms: 100,
        handshake_timeout_ms: 200,
        close_timeout_ms: 200,
        ..test_config()
    }
}

#[test]
fn idle_peer_is_pinged_and_an_answering_peer_stays() {
    let (tx, _rx) = mpsc::channel();
    let server = serve(short(), move |_| Recorder(tx.clone()));
    let mut c = Client::connect(server.local_addr()).unwrap();
    // The client answers pings (its core queues the pong as it reads them).
    for _ in 0..3 {
        assert_eq!(c.recv().unwrap(), Event::Ping(Vec::new()));
    }
    c.send_text("still here").unwrap();
    loop {
        match c.recv().unwrap() {
            Event::Ping(_) => continue,
            other => break assert_eq!(other, Event::Text("still here".into())),
        }
    }
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn silent_peer_is_closed_after_the_pong_deadline() {
    let (tx, rx) = mpsc::channel();
    let server = serve(short(), move |_| Recorder(tx.clone()));
    let mut c = Client::connect(server.local_addr()).unwrap();
    // Never answer: read raw bytes only (no pong) until the server ends TCP.
    use std::io::Read;
    let mut raw = Vec::new();
    c.stream.read_to_end(&mut raw).unwrap();
    assert!(raw.starts_with(&[0x89, 0]), "a ping came first: {raw:?}");
    let (_, code) = rx.recv_timeout(common::READ_TIMEOUT).unwrap();
    assert_eq!(code, 1006, "a peer that vanished ends abnormally");
    // The forced end (shutdown(SHUT_RDWR) then Close) frees the slot and the descriptor even
    // though this client never closes its socket: only the /metrics connection remains.
    let addr = server.local_addr();
    let freed = (0..500).any(|_| {
        let done = common::metric(addr, "ringws_slab_slots") == 1
            && common::metric(addr, "ringws_fixed_files_in_use") == 1;
        if !done {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        done
    });
    assert!(freed, "slot or descriptor of the silent peer leaked");
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn slow_handshake_is_cut_at_the_deadline() {
    let (tx, _rx) = mpsc::channel();
    let server = serve(short(), move |_| Recorder(tx.clone()));
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty() || !rest.starts_with(b"HTTP/1.1 101"),
        "never upgraded"
    );
    server.shutdown();
    server.join().unwrap();
}
