//! Hostile peers: random bytes instead of a handshake (400 and a close), random bytes after the
//! upgrade (a Close with a valid code, or a cut), every frame-level violation not already covered
//! by e2e_protocol with its exact close code, and a peer that keeps sending after its Close.
//! After each scenario the gauges come back to their baseline.
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Client, Event, READ_TIMEOUT, serve, test_config};
use hostile::{Rng, assert_baseline, close_code_of, raw_connect, raw_frame, raw_upgrade};
use ringws::Config;
use ringws::modes::Echo;
use ringws::proto::error::close_code::is_valid_on_wire;

const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

fn short() -> Config {
    Config {
        ping_interval_ms: 200,
        pong_timeout_ms: 200,
        close_timeout_ms: 500,
        handshake_timeout_ms: 1000,
        ..test_config()
    }
}

#[test]
fn random_bytes_instead_of_a_handshake_get_400_and_a_close() {
    let server = serve(short(), |_| Echo);
    let addr = server.local_addr();
    let seed = 0x5eed_0001;
    let mut rng = Rng::new(seed);
    for round in 0..40 {
        let len = 1 + rng.below(3000) as usize;
        let mut junk = rng.bytes(len);
        // Make the first byte something no request line starts with, so that the request is
        // never a valid prefix; end it like a header block.
        junk[0] |= 0x80;
        junk.extend_from_slice(b"\r\n\r\n");
        let mut s = raw_connect(addr).unwrap();
        s.write_all(&junk).unwrap();
        let mut answer = Vec::new();
        // The server answers, then ends TCP: read_to_end returns (EOF), it does not time out.
        s.read_to_end(&mut answer)
            .unwrap_or_else(|e| panic!("seed {seed:#x} round {round}: {e}"));
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 400 "),
            "seed {seed:#x} round {round}: {text}"
        );
        assert!(text.contains("Connection: close"), "{text}");
    }
    // Printable junk, with spaces and line ends, that looks a little more like HTTP: refused
    // with a 4xx, never upgraded, never left hanging.
    for round in 0..40 {
        let len = 1 + rng.below(600) as usize;
        let alphabet = b"GET /HTTP1.:\r\n aZ-?=&";
        let mut junk: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
            .collect();
        junk.extend_from_slice(b"\r\n\r\n");
        let mut s = raw_connect(addr).unwrap();
        s.write_all(&junk).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .unwrap_or_else(|e| panic!("seed {seed:#x} printable round {round}: {e}"));
        let text = String::from_utf8_lossy(&answer);
        let ctx = format!("seed {seed:#x} printable round {round}: {junk:?} -> {text}");
        let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).expect(&ctx);
        assert!((400..500).contains(&status), "{ctx}");
    }
    assert_baseline(addr, "random handshakes");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn random_bytes_after_the_upgrade_end_in_a_valid_close_or_a_cut() {
    let server = serve(short(), |_| Echo);
    let addr = server.local_addr();
    let seed = 0x5eed_0002;
    let mut rng = Rng::new(seed);
    for round in 0..30 {
        let mut s = raw_upgrade(addr).unwrap();
        let len = 1 + rng.below(4000) as usize;
        let junk = rng.bytes(len);
        s.write_all(&junk).unwrap();
        // Whatever the junk was, the server ends TCP: at once on a violation, or through the
        // heartbeat (this peer never answers a ping) when the junk is an unfinished frame.
        let (frames, rest) = hostile::read_frames_to_end(&mut s).unwrap();
        let ctx = format!("seed {seed:#x} round {round}: {frames:?}");
        assert!(rest.is_empty(), "{ctx}: trailing bytes {rest:?}");
        if let Some(at) = frames.iter().position(|(b, _)| b & 0x0f == 0x8) {
            assert_eq!(at, frames.len() - 1, "{ctx}: frames after the Close");
            // An empty Close (the echo of the peer's own empty Close) carries no code.
            let payload = &frames[at].1;
            let code = close_code_of(payload);
            assert!(
                payload.is_empty() || is_valid_on_wire(code),
                "{ctx}: code {code}"
            );
        }
    }
    assert_baseline(addr, "random frames");
    server.shutdown();
    server.join().unwrap();
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason].concat()
}

#[test]
fn each_violation_gets_its_exact_close_code() {
    let server = serve(short(), |_| Echo);
    let addr = server.local_addr();
    let mut long_length = vec![0x82, 0xff];
    long_length.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
    long_length.extend_from_slice(&[1, 2, 3, 4]);
    let mut non_minimal = vec![0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4];
    non_minimal.extend_from_slice(&[0u8; 5]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("RSV1 without extension", raw_frame(0xc1, b"x", MASK), 1002),
        ("RSV3 without extension", raw_frame(0x92, b"x", MASK), 1002),
        ("reserved data opcode 3", raw_frame(0x83, b"x", MASK), 1002),
        (
            "reserved control opcode 0xB",
            raw_frame(0x8b, b"", MASK),
            1002,
        ),
        (
            "ping over 125 bytes",
            raw_frame(0x89, &[0; 126], MASK),
            1002,
        ),
        ("fragmented ping", raw_frame(0x09, b"p", MASK), 1002),
        ("continuation first", raw_frame(0x80, b"x", MASK), 1002),
        (
            "new text inside a fragmented one",
            [raw_frame(0x01, b"a", MASK), raw_frame(0x81, b"b", MASK)].concat(),
            1002,
        ),
        ("close of one byte", raw_frame(0x88, &[3], MASK), 1002),
        (
            "close code 1005",
            raw_frame(0x88, &close_payload(1005, b""), MASK),
            1002,
        ),
        (
            "close code 999",
            raw_frame(0x88, &close_payload(999, b""), MASK),
            1002,
        ),
        (
            "close code 2999",
            raw_frame(0x88, &close_payload(2999, b""), MASK),
            1002,
        ),
        (
            "close reason not UTF-8",
            raw_frame(0x88, &close_payload(1000, b"\xff\xfe"), MASK),
            1007,
        ),
        ("overlong UTF-8", raw_frame(0x81, b"\xc0\x80", MASK), 1007),
        (
            "UTF-8 cut at the end",
            raw_frame(0x81, b"ok \xe2\x82", MASK),
            1007,
        ),
        (
            "surrogate in UTF-8",
            raw_frame(0x81, b"\xed\xa0\x80", MASK),
            1007,
        ),
        ("64-bit length top bit", long_length, 1002),
        ("non-minimal length", non_minimal, 1002),
    ];
    for (name, bytes, want) in cases {
        let mut c = Client::connect(addr).unwrap();
        c.send_text("before").unwrap();
        assert_eq!(c.recv().unwrap(), Event::Text("before".into()), "{name}");
        c.send_raw(&bytes).unwrap();
        let (code, _) = c.recv_close().unwrap();
        assert_eq!(code, want, "{name}");
        c.read_to_eof().unwrap();
    }
    assert_baseline(addr, "violations");
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn a_peer_that_keeps_sending_after_its_close_is_ignored_then_closed() {
    let server = serve(short(), |_| Echo);
    let addr = server.local_addr();
    let mut s = raw_upgrade(addr).unwrap();
    let mut reader = s.try_clone().unwrap();
    let read = std::thread::spawn(move || hostile::read_frames_to_end(&mut reader).unwrap());
    s.write_all(&raw_frame(0x81, b"first", MASK)).unwrap();
    s.write_all(&raw_frame(0x88, &close_payload(1000, b"done"), MASK))
        .unwrap();
    // Keep sending data, pings and Closes until the server has cut TCP (bounded).
    let start = Instant::now();
    let mut cut = false;
    while start.elapsed() < READ_TIMEOUT {
        let mut burst = raw_frame(0x81, b"after the close", MASK);
        burst.extend(raw_frame(0x89, b"ping", MASK));
        burst.extend(raw_frame(0x88, &close_payload(1000, b""), MASK));
        if s.write_all(&burst).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(cut, "the server never closed a peer that kept sending");
    let (frames, _) = read.join().unwrap();
    assert_eq!(
        frames.len(),
        2,
        "nothing after the Close is answered: {frames:?}"
    );
    assert_eq!(frames[0], (0x81, b"first".to_vec()));
    assert_eq!(frames[1].0, 0x88, "{frames:?}");
    assert_eq!(close_code_of(&frames[1].1), 1000, "the Close is echoed");
    drop(s);
    assert_baseline(addr, "sending after close");
    server.shutdown();
    server.join().unwrap();
}
