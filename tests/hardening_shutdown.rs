//! SIGTERM during load: clients in the middle of pipelined echo traffic, an open client that
//! never reads nor answers, and a peer still in its handshake. Every open client receives Close
//! 1001 (after the echoes of what it sent, in order), and the process exits 0 within the close
//! timeout (plus the worker's grace and a generous margin), even with the peer that never answers.
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{Client, Event};
use hostile::{close_code_of, raw_connect, raw_upgrade, spawn_server, wait_exit};

const CLOSE_TIMEOUT_MS: u64 = 2000;
const LOADERS: usize = 8;
const WINDOW: usize = 8;

/// Pipelined echo until the server's Close: returns (echoes received, close code).
fn load(addr: std::net::SocketAddr, id: usize, progress: Arc<AtomicU64>) -> (u64, u16) {
    let mut c = Client::connect(addr).unwrap();
    let (mut next_sent, mut next_echo) = (0u64, 0u64);
    loop {
        while next_sent < next_echo + WINDOW as u64 {
            if c.send_text(&format!("{id}:{next_sent}")).is_err() {
                break;
            }
            next_sent += 1;
        }
        match c.recv().unwrap() {
            Event::Text(t) => {
                assert_eq!(t, format!("{id}:{next_echo}"), "echoes in order, once");
                next_echo += 1;
                progress.fetch_add(1, Relaxed);
            }
            Event::Close(code, _) => {
                // Our core answered the Close; the server ends TCP first.
                c.read_to_eof().unwrap();
                return (next_echo, code);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn sigterm_under_load_sends_1001_to_every_open_client_and_exits_0() {
    let (mut child, addr) = spawn_server(&[
        "--workers",
        "2",
        "--close-timeout-ms",
        &CLOSE_TIMEOUT_MS.to_string(),
    ]);
    let progress: Vec<_> = (0..LOADERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let loaders: Vec<_> = (0..LOADERS)
        .map(|id| {
            let progress = progress[id].clone();
            std::thread::spawn(move || load(addr, id, progress))
        })
        .collect();
    // An open client that will neither read nor answer the Close.
    let mut mute = raw_upgrade(addr).unwrap();
    // A peer in the middle of its handshake.
    let mut half = raw_connect(addr).unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert!(
        hostile::eventually(common::READ_TIMEOUT, || progress
            .iter()
            .all(|p| p.load(Relaxed) >= 50)),
        "the load never got going"
    );
    let signalled = Instant::now();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    for (id, l) in loaders.into_iter().enumerate() {
        let (echoes, code) = l.join().unwrap();
        assert_eq!(code, 1001, "loader {id}");
        assert!(echoes > 0, "loader {id} was under load");
    }
    let limit = Duration::from_millis(CLOSE_TIMEOUT_MS) + Duration::from_secs(1 + 20);
    let status = wait_exit(&mut child, limit).expect("exits after SIGTERM");
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    eprintln!("exited {took:?} after SIGTERM (close timeout {CLOSE_TIMEOUT_MS} ms)");
    // The mute client got its 1001 too (it is in its socket buffer), then the cut.
    let (frames, _) = hostile::read_frames_to_end(&mut mute).unwrap();
    let close = frames.iter().find(|(b, _)| *b == 0x88).expect("a Close");
    assert_eq!(close_code_of(&close.1), 1001);
    let (frames, rest) = hostile::read_frames_to_end(&mut half).unwrap();
    assert!(
        frames.is_empty() && rest.is_empty(),
        "no answer to a half handshake"
    );
}
