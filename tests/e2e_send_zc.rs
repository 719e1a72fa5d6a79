//! Zero-copy sends (RINGWS_SEND_ZC_MIN_BYTES) keep bytes and order: large and small echoes mixed.
mod common;

use common::{Client, Event, serve, test_config};
use ringws::modes::Echo;

#[test]
fn zero_copy_sends_echo_everything_in_order() {
    // SAFETY: the only test in this binary sets the variable before any server thread exists.
    unsafe { std::env::set_var("RINGWS_SEND_ZC_MIN_BYTES", "4096") };
    let server = serve(test_config(), |_| Echo);
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
