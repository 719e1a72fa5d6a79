//! Zero-copy sends (Config::send_zc_bytes_min) keep bytes and order: large and small echoes mixed.
mod common;

use common::{Client, Event, serve, test_config};
use ringws::modes::Echo;

#[test]
fn zero_copy_sends_echo_everything_in_order() {
    let config = ringws::config::Config {
        send_zc_bytes_min: 4096,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let mut c = Client::connect(server.local_addr()).unwrap();
    for n in [10, 5000, 100_000, 3, 1 << 20, 70_000] {
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        c.send_binary(&data).unwrap();
        c.send_text("small").unwrap();
        assert_eq!(c.recv().unwrap(), Event::Binary(data), "{n} bytes");
        assert_eq!(c.recv().unwrap(), Event::Text("small".into()));
    }
    drop(c);
    server.shutdown();
    server.join().unwrap();
}
