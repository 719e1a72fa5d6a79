//! A quick measurement client (not the load generator): `idle` holds N idle connections open;
//! `echo` drives C connections with pipelined messages and prints messages per second.
//!
//! ```text
//! cargo run --release --example quick_client -- idle 127.0.0.1:9001 10000
//! cargo run --release --example quick_client -- echo 127.0.0.1:9001 100 512 10 [depth]
//! ```
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[path = "common/upgrade.rs"]
mod upgrade;

use ringws::proto::frame::{self, OpCode};

fn connect(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    upgrade::upgrade(&mut s, "bench");
    s
}

fn idle(addr: SocketAddr, n: usize) {
    let conns: Vec<TcpStream> = (0..n).map(|_| connect(addr)).collect();
    println!("ready {}", conns.len());
    let _ = std::io::stdout().flush();
    // Hold them until stdin closes.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

fn echo(addr: SocketAddr, conns: usize, size: usize, secs: u64, depth: usize) {
    let mut frame_bytes = Vec::new();
    frame::encode_frame(
        &mut frame_bytes,
        true,
        OpCode::Binary,
        &vec![b'x'; size],
        Some([1, 2, 3, 4]),
    );
    let batch = frame_bytes.repeat(depth);
    let echo_len = frame::header_len(size as u64, false) + size;
    let mut streams: Vec<TcpStream> = (0..conns).map(|_| connect(addr)).collect();
    let mut buf = vec![0u8; echo_len * depth];
    let start = Instant::now();
    let mut msgs = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        for s in &mut streams {
            s.write_all(&batch).unwrap();
        }
        for s in &mut streams {
            s.read_exact(&mut buf).unwrap();
        }
        msgs += (conns * depth) as u64;
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "{conns} conns x {size} B, depth {depth}: {msgs} echoes in {t:.2} s = {:.0} msgs/s",
        msgs as f64 / t
    );
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = a.get(1).expect("addr").parse().unwrap();
    let n = |i: usize, d: usize| a.get(i).map_or(d, |v| v.parse().unwrap());
    match a.first().map(String::as_str) {
        Some("idle") => idle(addr, n(2, 10_000)),
        Some("echo") => echo(addr, n(2, 100), n(3, 512), n(4, 10) as u64, n(5, 16)),
        _ => eprintln!("usage: quick_client idle ADDR N | echo ADDR CONNS SIZE SECS [DEPTH]"),
    }
}
