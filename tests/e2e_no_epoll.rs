//! The server makes no epoll call: run the binary under `strace -f`, echo, SIGTERM, then read
//! the trace. Needs `strace` (apt); set RINGWS_SKIP_STRACE=1 to skip where it cannot run.
mod common;

use std::process::{Command, Stdio};

use common::{Client, Event};

fn children(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[test]
fn server_makes_no_epoll_call() {
    if std::env::var_os("RINGWS_SKIP_STRACE").is_some() {
        eprintln!("skipped: RINGWS_SKIP_STRACE is set");
        return;
    }
    let trace = std::env::temp_dir().join(format!("ringws-strace-{}.txt", std::process::id()));
    let mut strace = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", "trace=io_uring_setup,io_uring_enter,epoll_create,epoll_create1,epoll_ctl,epoll_wait,epoll_pwait,epoll_pwait2"])
        .arg(env!("CARGO_BIN_EXE_ringws"))
        .args(["serve", "--port", "0", "--workers", "2", "--no-pin"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("strace runs (apt-get install strace, or set RINGWS_SKIP_STRACE=1)");
    let addr = common::listen_addr(&mut strace);
    let mut clients: Vec<Client> = (0..8).map(|_| Client::connect(addr).unwrap()).collect();
    for c in &mut clients {
        c.send_binary(&[1, 2, 3]).unwrap();
        assert_eq!(c.recv().unwrap(), Event::Binary(vec![1, 2, 3]));
    }
    let server = children(strace.id());
    assert_eq!(server.len(), 1, "strace has the server as its one child");
    // SAFETY: sending a signal to our own grandchild process.
    assert_eq!(unsafe { libc::kill(server[0] as i32, libc::SIGTERM) }, 0);
    for c in &mut clients {
        assert_eq!(c.recv_close().unwrap().0, 1001);
    }
    drop(clients);
    assert!(strace.wait().unwrap().success());
    let text = std::fs::read_to_string(&trace).unwrap();
    let _ = std::fs::remove_file(&trace);
    assert!(
        text.contains("io_uring_enter("),
        "the trace caught the ring: {text}"
    );
    let epoll: Vec<&str> = text.lines().filter(|l| l.contains("epoll")).collect();
    assert!(epoll.is_empty(), "epoll calls: {epoll:?}");
}
