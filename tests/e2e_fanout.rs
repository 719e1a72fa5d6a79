//! Broadcast and pubsub across workers, and the cross-thread Publisher.
mod common;

use common::{Client, Event, serve, test_config};
use ringws::modes::{Broadcast, PubSub};
use ringws::{Config, Message};

fn two_workers() -> Config {
    Config {
        workers: 2,
        ..test_config()
    }
}

#[test]
fn broadcast_reaches_every_connection_on_every_worker() {
    let server = serve(two_workers(), |_| Broadcast);
    let addr = server.local_addr();
    let mut clients: Vec<Client> = (0..20).map(|_| Client::connect(addr).unwrap()).collect();
    // Make sure every connection is open before the broadcast (each gets its own echo).
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&format!("hello {i}")).unwrap();
        loop {
            if c.recv().unwrap() == Event::Text(format!("hello {i}")) {
                break;
            }
        }
    }
    clients[0].send_binary(b"to all").unwrap();
    for c in &mut clients {
        loop {
            match c.recv().unwrap() {
                Event::Binary(b) => break assert_eq!(b, b"to all"),
                Event::Text(_) => continue,
                other => panic!("{other:?}"),
            }
        }
    }
    server.publisher().broadcast(Message::Text("from outside"));
    for c in &mut clients {
        assert_eq!(c.recv().unwrap(), Event::Text("from outside".into()));
    }
    drop(clients);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn pubsub_delivers_to_subscribers_only() {
    let server = serve(two_workers(), |_| PubSub);
    let addr = server.local_addr();
    let mut subs: Vec<Client> = (0..6).map(|_| Client::connect(addr).unwrap()).collect();
    for c in &mut subs {
        c.send_text("sub news").unwrap();
        assert_eq!(c.recv().unwrap(), Event::Text("ok sub news".into()));
    }
    let mut other = Client::connect(addr).unwrap();
    other.send_text("sub sport").unwrap();
    assert_eq!(other.recv().unwrap(), Event::Text("ok sub sport".into()));
    let mut publisher = Client::connect(addr).unwrap();
    publisher.send_text("pub news extra extra").unwrap();
    for c in &mut subs {
        assert_eq!(c.recv().unwrap(), Event::Text("extra extra".into()));
    }
    server.publisher().publish("sport", Message::Text("goal"));
    assert_eq!(
        other.recv().unwrap(),
        Event::Text("goal".into()),
        "news did not reach sport"
    );
    subs[0].send_text("unsub news").unwrap();
    assert_eq!(subs[0].recv().unwrap(), Event::Text("ok unsub news".into()));
    publisher.send_text("pub news second").unwrap();
    for c in &mut subs[1..] {
        assert_eq!(c.recv().unwrap(), Event::Text("second".into()));
    }
    subs[0].send_text("bogus").unwrap();
    assert!(
        matches!(subs[0].recv().unwrap(), Event::Text(t) if t.starts_with("error")),
        "unsubscribed got nothing"
    );
    drop((subs, other, publisher));
    server.shutdown();
    server.join().unwrap();
}

/// Reports each opened connection's id.
struct Ids(std::sync::mpsc::Sender<ringws::ConnId>);

impl ringws::Handler for Ids {
    fn on_open<'r>(
        &mut self,
        conn: &mut ringws::Conn<'_>,
        _req: &ringws::UpgradeRequest<'r>,
    ) -> ringws::OpenDecision<'r> {
        let _ = self.0.send(conn.id());
        ringws::OpenDecision::Accept { protocol: None }
    }
    fn on_message(&mut self, _conn: &mut ringws::Conn<'_>, _msg: Message<'_>) {}
}

#[test]
fn publisher_sends_to_one_connection_from_another_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = serve(two_workers(), move |_| Ids(tx.clone()));
    let addr = server.local_addr();
    let mut a = Client::connect(addr).unwrap();
    let id_a = rx.recv().unwrap();
    let mut b = Client::connect(addr).unwrap();
    let id_b = rx.recv().unwrap();
    assert_ne!(id_a, id_b);
    let p = server.publisher();
    std::thread::spawn(move || {
        p.send(id_b, Message::Text("for b"));
        p.send(id_a, Message::Binary(b"for a"));
    })
    .join()
    .unwrap();
    assert_eq!(a.recv().unwrap(), Event::Binary(b"for a".to_vec()));
    assert_eq!(b.recv().unwrap(), Event::Text("for b".into()));
    drop((a, b));
    server.shutdown();
    server.join().unwrap();
}
