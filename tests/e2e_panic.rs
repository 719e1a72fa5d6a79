//! A panicking handler takes its worker down cleanly: its connections end, its listener closes,
//! and `join` reports the panic.
mod common;

use common::{Client, Event, serve, test_config};
use ringws::{Conn, Handler, Message};

struct Boom;

impl Handler for Boom {
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        if msg == Message::Text("boom") {
            panic!("handler panic (expected by the test)");
        }
        conn.send(msg);
    }
}

#[test]
fn a_panicking_handler_ends_its_worker_cleanly() {
    let server = serve(test_config(), |_| Boom);
    let addr = server.local_addr();
    let mut c = Client::connect(addr).unwrap();
    c.send_text("ok").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("ok".into()));
    c.send_text("boom").unwrap();
    assert!(c.recv().is_err(), "the connection ends with its worker");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is closed"
    );
    server.shutdown();
    assert!(server.join().is_err(), "join reports the panic");
}
