//! The smallest embedding: an echo server that greets by path and counts messages per worker.
//! Run: `cargo run --release --example echo` then connect to ws://127.0.0.1:9002/.
use ringws::{Config, Conn, ConnId, Handler, Message, OpenDecision, UpgradeRequest};

struct Echo {
    worker: usize,
    messages: u64,
}

impl Handler for Echo {
    fn on_open<'r>(&mut self, _conn: &mut Conn<'_>, req: &UpgradeRequest<'r>) -> OpenDecision<'r> {
        if req.path == "/forbidden" {
            return OpenDecision::Reject(403);
        }
        // Pick "echo" if the client offers it.
        let protocol = req.protocols_iter().find(|p| *p == "echo");
        OpenDecision::Accept { protocol }
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        self.messages += 1;
        conn.send(msg);
    }

    fn on_close(&mut self, id: ConnId, code: u16, reason: &str) {
        println!(
            "worker {}: {id:?} closed {code} {reason:?} ({} msgs)",
            self.worker, self.messages
        );
    }
}

fn main() -> std::io::Result<()> {
    let config = Config {
        workers: 2,
        ..Config::default()
    };
    let factory = |worker| Echo {
        worker,
        messages: 0,
    };
    let addr = "127.0.0.1:9002".parse().unwrap();
    ringws::run_until_signal(addr, config, factory, |a| println!("listening on ws://{a}"))
}
