//! The server connection core fed arbitrary bytes in arbitrary chunkings: it never panics, the
//! events are the same whatever the chunking, and a failure sends exactly one Close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringws::proto::connection::{Connection, Deflate, Limits, MessageKind, Role, Sink};

#[derive(Default, PartialEq, Debug)]
struct Rec(Vec<(u8, Vec<u8>)>);

impl Sink for Rec {
    fn message(&mut self, kind: MessageKind, payload: &[u8]) {
        assert!(kind != MessageKind::Text || std::str::from_utf8(payload).is_ok());
        self.0.push((kind as u8, payload.to_vec()));
    }
    fn ping(&mut self, p: &[u8]) {
        self.0.push((9, p.to_vec()));
    }
    fn pong(&mut self, p: &[u8]) {
        self.0.push((10, p.to_vec()));
    }
    fn close(&mut self, code: u16, reason: &str) {
        self.0.push((8, [&code.to_be_bytes()[..], reason.as_bytes()].concat()));
    }
    fn send_frame(&mut self, f: &[u8]) {
        self.0.push((0xff, f.to_vec()));
    }
}

fn run(
    stream: &[u8],
    cuts: impl Iterator<Item = usize>,
    limits: Limits,
    deflate: Option<Deflate>,
) -> (Rec, bool) {
    let mut conn = Connection::new(Role::Server, limits, 0);
    conn.set_deflate(deflate);
    let mut rec = Rec::default();
    let mut failed = false;
    let mut start = 0;
    for end in cuts.chain(std::iter::once(stream.len())) {
        let end = end.clamp(start, stream.len());
        let mut piece = stream[start..end].to_vec();
        failed |= conn.receive(&mut piece, &mut rec).is_err();
        start = end;
    }
    (rec, failed)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The first two bytes choose a chunk size, small limits and permessage-deflate (bit 7: agreed,
    // bit 6: the client keeps its window); the rest is the stream.
    let chunk = data[0] as usize + 1;
    let limits = Limits { frame_bytes_max: 4096, message_bytes_max: 8192, message_fragments_max: 1 + data[1] as u32 % 8 };
    let deflate = (data[1] & 0x80 != 0).then_some(Deflate {
        peer_context_takeover: data[1] & 0x40 != 0,
        send_window_bits: 15,
    });
    let stream = &data[2..];
    let (whole, failed) = run(stream, std::iter::empty(), limits, deflate);
    let (chunked, failed2) = run(stream, (chunk..stream.len()).step_by(chunk), limits, deflate);
    let (bytes, failed3) = run(stream, 1..stream.len(), limits, deflate);
    assert_eq!(whole, chunked);
    assert_eq!(whole, bytes);
    assert_eq!((failed, failed), (failed2, failed3));
    let closes = whole.0.iter().filter(|(k, f)| *k == 0xff && f[0] == 0x88).count();
    assert!(closes <= 1, "more than one Close sent");
    if failed {
        assert_eq!(closes, 1, "a failure must send its Close");
    }
});
