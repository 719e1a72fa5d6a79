//! A peer that sends pings and never reads: the pongs it is owed must not grow the server's
//! memory without bound. RFC 6455 §5.5.3 lets an endpoint answer only the most recent Ping; or
//! the pongs can count against `send_queue_bytes_max` like data (then Close 1008). Either way the
//! server's memory stays bounded. Since #16 the pongs also count towards the high mark, so the
//! server stops reading from such a peer (TCP then blocks its writes) long before the limit. Measured as the RSS of this test process (the server runs in
//! it; this file holds one test so nothing else runs alongside).
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::Write;

use common::{READ_TIMEOUT, serve, test_config};
use hostile::{eventually, raw_frame, raw_upgrade};
use ringws::Config;
use ringws::modes::Echo;

const FLOOD_BYTES: usize = 96 << 20;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn ping_flood_from_a_peer_that_never_reads_keeps_memory_bounded() {
    let config = Config {
        send_queue_bytes_max: 64 * 1024,
        send_queue_high_bytes: 32 * 1024,
        send_queue_low_bytes: 8 * 1024,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let addr = server.local_addr();
    let mut s = raw_upgrade(addr).unwrap();
    s.set_write_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let ping = raw_frame(0x89, &[7u8; 125], Some([1, 2, 3, 4]));
    let batch: Vec<u8> = ping.repeat(1024);
    let before = rss_kib();
    let mut sent = 0;
    let mut cut = false;
    while sent < FLOOD_BYTES {
        if s.write_all(&batch).is_err() {
            // The server closed us, or stopped reading (the write blocked): bounded too.
            cut = true;
            break;
        }
        sent += batch.len();
    }
    // Everything sent was read by the server, or it cut the connection, or it stopped reading
    // from it (the rest of the flood then waits in the kernel's socket buffers, which can hold
    // it without blocking our writes).
    let received = || server.metrics().total(|w| &w.bytes_received) as usize >= sent;
    let closed = || server.metrics().total(|w| &w.open) == 0;
    let paused = || server.metrics().total(|w| &w.reads_paused) > 0;
    assert!(eventually(READ_TIMEOUT, || cut
        || received()
        || closed()
        || paused()));
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    eprintln!("sent {} MiB of pings; RSS grew {grown_mib} MiB", sent >> 20);
    // The kernel's socket buffers are not in RSS; the server may hold its send-queue limit and
    // some slack, nowhere near the 96 MiB of pongs it was asked for.
    assert!(
        grown_mib < 32,
        "the server holds the pongs of a peer that never reads: RSS +{grown_mib} MiB"
    );
    drop(s);
    hostile::assert_baseline(addr, "ping flood");
    server.shutdown();
    server.join().unwrap();
}
