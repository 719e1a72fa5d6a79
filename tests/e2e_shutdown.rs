//! Graceful shutdown of the real binary: SIGTERM → every client gets Close 1001 → exit 0.
mod common;

use std::process::{Command, Stdio};

use common::{Client, Event};

#[test]
fn sigterm_sends_1001_to_everyone_and_exits_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringws"))
        .args([
            "serve",
            "--port",
            "0",
            "--workers",
            "2",
            "--no-pin",
            "--close-timeout-ms",
            "3000",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::listen_addr(&mut child);
    let mut clients: Vec<Client> = (0..50).map(|_| Client::connect(addr).unwrap()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&i.to_string()).unwrap();
        assert_eq!(c.recv().unwrap(), Event::Text(i.to_string()));
    }
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    for c in &mut clients {
        assert_eq!(c.recv_close().unwrap().0, 1001);
    }
    // Our clients answered the Close; the server ends TCP first.
    for c in &mut clients {
        c.read_to_eof().unwrap();
    }
    drop(clients);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer listening"
    );
}

#[test]
fn sigterm_with_a_client_that_never_reads_still_exits_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringws"))
        .args([
            "serve",
            "--port",
            "0",
            "--workers",
            "1",
            "--no-pin",
            "--close-timeout-ms",
            "300",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = common::listen_addr(&mut child);
    let mut stuck = Client::connect(addr).unwrap();
    // Fill the server's send queue towards this client (it never reads). The server stops
    // reading from it past the high mark (#16), so these writes block: they run on a thread
    // that ends when the server closes the connection.
    let writer = std::thread::spawn(move || {
        let big = vec![0u8; 1 << 20];
        for _ in 0..16 {
            if stuck.send_binary(&big).is_err() {
                break;
            }
        }
        stuck
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut fine = Client::connect(addr).unwrap();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(fine.recv_close().unwrap().0, 1001);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    drop((writer.join().unwrap(), fine));
}
