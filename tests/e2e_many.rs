//! 1000 concurrent clients on two workers, each echoing its own messages.
mod common;

use common::{Client, Event, metric, serve, test_config};
use ringws::Config;
use ringws::modes::Echo;

#[test]
fn a_thousand_concurrent_clients() {
    let config = Config {
        workers: 2,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut clients: Vec<Client> =
                    (0..250).map(|_| Client::connect(addr).unwrap()).collect();
                for round in 0..3 {
                    for (i, c) in clients.iter_mut().enumerate() {
                        c.send_text(&format!("{t}/{i}/{round}")).unwrap();
                    }
                    for (i, c) in clients.iter_mut().enumerate() {
                        assert_eq!(c.recv().unwrap(), Event::Text(format!("{t}/{i}/{round}")));
                    }
                }
                clients
            })
        })
        .collect();
    let mut all: Vec<Client> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(metric(addr, "ringws_connections{state=\"open\"}"), 1000);
    for c in &mut all {
        c.close(1000, "").unwrap();
    }
    for c in &mut all {
        assert_eq!(c.recv_close().unwrap().0, 1000);
    }
    drop(all);
    server.shutdown();
    server.join().unwrap();
}
