//! N² broadcast client (the shape of uWebSockets' broadcast_test): C clients; each sends one
//! small text message, and sends its next one once it has received C more deliveries (one per
//! client's message), so every round every client sends once and the server delivers C × C
//! frames. Counts deliveries over a measured window after a warm-up and reports its own CPU use,
//! to show whether the client is the bottleneck.
//!
//! Cheap on purpose: one tokio `current_thread` runtime (pin it with `taskset`), raw TCP, the
//! handshake written by hand, frames only counted (server frames are unmasked: parse the header,
//! skip the payload), and each client's masked frame built once.
//!
//! `peer-n2 --port P [--conns 320] [--size 20] [--warmup-s 2] [--duration-s 8] [--server-pid PID]`
//! prints one line: `n2 conns=C size=S deliveries=D seconds=T deliveries_per_s=R client_cpu_pct=P`

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringws_peers::{cpu_ticks, cpu_ticks_self, run_local};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Opts {
    port: u16,
    conns: u64,
    size: usize,
    warmup_s: f64,
    duration_s: f64,
    server_pid: Option<String>,
}

fn opts() -> Result<Opts, String> {
    let mut o = Opts {
        port: 9001,
        conns: 320,
        size: 20,
        warmup_s: 2.0,
        duration_s: 8.0,
        server_pid: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_: std::num::ParseIntError| format!("{flag}: not a number: {v}");
        let badf = |_: std::num::ParseFloatError| format!("{flag}: not a number: {v}");
        match flag.as_str() {
            "--port" => o.port = v.parse().map_err(bad)?,
            "--conns" => o.conns = v.parse().map_err(bad)?,
            "--size" => o.size = v.parse().map_err(bad)?,
            "--warmup-s" => o.warmup_s = v.parse().map_err(badf)?,
            "--duration-s" => o.duration_s = v.parse().map_err(badf)?,
            "--server-pid" => o.server_pid = Some(v.parse::<u32>().map_err(bad)?.to_string()),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.size > 125 || o.conns == 0 {
        return Err("--size must be <= 125 and --conns >= 1".into());
    }
    Ok(o)
}

/// A masked text frame of `size` ASCII bytes (FIN, opcode 1), built once per client.
fn masked_frame(size: usize, key: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0x81, 0x80 | size as u8];
    f.extend_from_slice(&key);
    f.extend((0..size).map(|i| (b'a' + (i % 26) as u8) ^ key[i % 4]));
    f
}

/// Length of the complete server frame at the start of `buf` (header + payload), if complete.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let b1 = *buf.get(1)?;
    let (hdr, len) = match b1 & 0x7f {
        126 => (4, u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize),
        127 => (
            10,
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
        ),
        n => (2, n as usize),
    };
    let total = hdr + len;
    (buf.len() >= total).then_some(total)
}

/// Counts the complete frames in `buf[..end]`; returns (frames, bytes consumed).
fn count_frames(buf: &[u8]) -> (u64, usize) {
    let (mut n, mut at) = (0, 0);
    while let Some(len) = frame_len(&buf[at..]) {
        n += 1;
        at += len;
    }
    (n, at)
}

/// Connects and upgrades; returns the stream and any frame bytes that followed the 101.
async fn connect(port: u16) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("closed during handshake"));
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                return Err(std::io::Error::other("upgrade refused"));
            }
            return Ok((s, buf.split_off(end + 4)));
        }
    }
}

/// One client: send, then wait for `conns` deliveries before the next send.
async fn client(
    mut s: TcpStream,
    mut buf: Vec<u8>,
    frame: Vec<u8>,
    conns: u64,
    total: Rc<Cell<u64>>,
) {
    let mut filled = buf.len();
    buf.resize(filled + 256 * 1024, 0);
    let mut owed = 0u64; // deliveries still to come before the next send
    loop {
        if owed == 0 {
            if s.write_all(&frame).await.is_err() {
                return;
            }
            owed = conns;
        }
        let (n, used) = count_frames(&buf[..filled]);
        buf.copy_within(used..filled, 0);
        filled -= used;
        total.set(total.get() + n);
        owed = owed.saturating_sub(n);
        if owed == 0 {
            continue;
        }
        match s.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(r) => filled += r,
        }
    }
}

async fn run(o: Opts) {
    let total = Rc::new(Cell::new(0u64));
    let mut conns = Vec::new();
    for i in 0..o.conns {
        match connect(o.port).await {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!("peer-n2: connection {i}: {e}");
                std::process::exit(1);
            }
        }
    }
    for (i, (s, rest)) in conns.into_iter().enumerate() {
        let frame = masked_frame(o.size, (i as u32 ^ 0x5a5a_1234).to_le_bytes());
        let total = total.clone();
        tokio::task::spawn_local(client(s, rest, frame, o.conns, total));
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup_s)).await;
    let server = o.server_pid.as_deref().unwrap_or("self");
    let (d0, c0, s0, t0) = (
        total.get(),
        cpu_ticks_self(),
        cpu_ticks(server),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(o.duration_s)).await;
    let (d1, c1, s1) = (total.get(), cpu_ticks_self(), cpu_ticks(server));
    let secs = t0.elapsed().as_secs_f64();
    // Clock ticks are 10 ms (CLK_TCK = 100 here and on every common Linux build).
    let cpu_pct = (c1 - c0) as f64 / 100.0 / secs * 100.0;
    let deliveries = d1 - d0;
    let mut line = format!(
        "n2 conns={} size={} deliveries={deliveries} seconds={secs:.3} deliveries_per_s={:.0} client_cpu_pct={cpu_pct:.0}",
        o.conns,
        o.size,
        deliveries as f64 / secs
    );
    if o.server_pid.is_some() {
        let server_s = (s1 - s0) as f64 / 100.0;
        let ns = server_s * 1e9 / deliveries.max(1) as f64;
        line += &format!(
            " server_cpu_pct={:.0} server_ns_per_delivery={ns:.1}",
            server_s / secs * 100.0
        );
    }
    println!("{line}");
    std::process::exit(0);
}

fn main() {
    let o = opts().unwrap_or_else(|e| {
        eprintln!("peer-n2: {e}\nusage: peer-n2 --port P [--conns 320] [--size 20] [--warmup-s 2] [--duration-s 8] [--server-pid PID]");
        std::process::exit(2)
    });
    run_local(run(o));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_and_partial_tails_kept() {
        let mut stream = vec![0x81, 3, b'a', b'b', b'c'];
        stream.extend_from_slice(&[0x82, 126, 0, 200]);
        stream.extend(std::iter::repeat_n(0u8, 200));
        stream.extend_from_slice(&[0x81, 5, b'x']); // incomplete
        let (n, used) = count_frames(&stream);
        assert_eq!((n, used), (2, 5 + 4 + 200));
        assert_eq!(frame_len(&stream[used..]), None);
    }

    #[test]
    fn masked_frame_unmasks_to_ascii() {
        let key = [1, 2, 3, 4];
        let f = masked_frame(20, key);
        assert_eq!((f[0], f[1] & 0x7f, f.len()), (0x81, 20, 26));
        let text: Vec<u8> = f[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert!(text.iter().all(u8::is_ascii_lowercase));
    }
}
