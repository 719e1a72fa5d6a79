//! Echo over loopback: text and binary from 0 B to 1 MiB, and many clients at once.
mod common;

use common::{Client, Event, serve, test_config};
use ringws::modes::Echo;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
}

#[test]
fn echo_text_and_binary_of_every_size() {
    let server = serve(test_config(), |_| Echo);
    let mut c = Client::connect(server.local_addr()).unwrap();
    for n in [0, 1, 125, 126, 127, 65_535, 65_536, 100_000, 1 << 20] {
        let data = pattern(n);
        c.send_binary(&data).unwrap();
        assert_eq!(
            c.recv().unwrap(),
            Event::Binary(data),
            "binary of {n} bytes"
        );
        let text: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        c.send_text(&text).unwrap();
        assert_eq!(c.recv().unwrap(), Event::Text(text), "text of {n} bytes");
    }
    c.send_text("héllo wörld ✓").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("héllo wörld ✓".into()));
    c.close(1000, "bye").unwrap();
    assert_eq!(c.recv_close().unwrap().0, 1000);
    c.read_to_eof().unwrap();
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn two_receive_buffers_still_serve_everyone() {
    // With 2 provided buffers, concurrent senders run the group dry (ENOBUFS): receives must be
    // re-armed and nothing lost.
    let config = ringws::Config {
        recv_buffers_per_worker: 2,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut cs: Vec<Client> = (0..25).map(|_| Client::connect(addr).unwrap()).collect();
                for round in 0..20 {
                    for (i, c) in cs.iter_mut().enumerate() {
                        c.send_binary(&pattern(1000 + t * 100 + i + round)).unwrap();
                    }
                    for (i, c) in cs.iter_mut().enumerate() {
                        assert_eq!(
                            c.recv().unwrap(),
                            Event::Binary(pattern(1000 + t * 100 + i + round))
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    server.shutdown();
    server.join().unwrap();
}
