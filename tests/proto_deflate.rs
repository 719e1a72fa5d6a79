//! permessage-deflate in the connection core (RFC 7692 §6–§7): compressed messages whole, split at
//! every point and fragmented, RSV1 rules, the context-takeover modes, the 1009 cap on inflated
//! size and the 1007 answers, all without a kernel.

use ringws::proto::connection::{Connection, Deflate, Limits, MessageKind, Role, Sink, State};
use ringws::proto::deflate::{Deflater, Inflater};
use ringws::proto::error::ProtoError;
use ringws::proto::frame::{HEADER_BYTES_MAX, OpCode, encode_header};
use ringws::proto::mask::unmask;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Msg(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Sent(Vec<u8>),
}

#[derive(Default)]
struct Rec {
    ev: Vec<Ev>,
    inflaters_taken: usize,
}

impl Sink for Rec {
    fn message(&mut self, kind: MessageKind, payload: &[u8]) {
        self.ev.push(Ev::Msg(kind, payload.to_vec()));
    }
    fn ping(&mut self, p: &[u8]) {
        self.ev.push(Ev::Ping(p.to_vec()));
    }
    fn send_frame(&mut self, f: &[u8]) {
        self.ev.push(Ev::Sent(f.to_vec()));
    }
    fn take_inflater(&mut self) -> Box<Inflater> {
        self.inflaters_taken += 1;
        Box::default()
    }
}

const KEY: [u8; 4] = [0x11, 0xa7, 0x3c, 0xe2];
const RSV1: u8 = 0b100;

/// A masked client frame with the given RSV bits.
fn frame(fin: bool, rsv: u8, op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut hdr = [0u8; HEADER_BYTES_MAX];
    let n = encode_header(&mut hdr, fin, rsv, op, payload.len() as u64, Some(KEY));
    let mut v = hdr[..n].to_vec();
    let mut p = payload.to_vec();
    unmask(&mut p, KEY, 0);
    v.extend_from_slice(&p);
    v
}

fn deflated(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Deflater::new(6, 15).compress_message(msg, &mut out);
    out
}

fn server(takeover: bool, limits: Limits) -> Connection {
    let mut c = Connection::new(Role::Server, limits, 0);
    c.set_deflate(Some(Deflate {
        peer_context_takeover: takeover,
        send_window_bits: 15,
    }));
    c
}

fn feed_cuts(
    c: &mut Connection,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<Ev>, Result<(), ProtoError>) {
    let mut rec = Rec::default();
    let mut start = 0;
    let mut result = Ok(());
    for &end in cuts.iter().chain(std::iter::once(&stream.len())) {
        let mut piece = stream[start..end].to_vec();
        if let Err(e) = c.receive(&mut piece, &mut rec) {
            result = Err(e);
        }
        start = end;
    }
    (rec.ev, result)
}

fn feed(c: &mut Connection, stream: &[u8]) -> (Vec<Ev>, Result<(), ProtoError>) {
    feed_cuts(c, stream, &[])
}

/// The Close frame a server sends with `code` (its first 4 bytes: header + code).
fn close_code_of(ev: &[Ev]) -> Option<u16> {
    ev.iter().rev().find_map(|e| match e {
        Ev::Sent(f) if f[0] == 0x88 && f.len() >= 4 => Some(u16::from_be_bytes([f[2], f[3]])),
        _ => None,
    })
}

fn json(n: usize) -> Vec<u8> {
    let unit =
        br#"{"channel":"ticker","product_id":"ETH-USD","price":"2231.40","best_bid":"2231.39"}"#;
    unit.iter().cycle().take(n).copied().collect()
}

#[test]
fn whole_compressed_message_is_inflated() {
    let msg = json(2000);
    let mut c = server(false, Limits::default());
    let (ev, r) = feed(&mut c, &frame(true, RSV1, OpCode::Text, &deflated(&msg)));
    r.unwrap();
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Text, msg)]);
}

#[test]
fn uncompressed_messages_still_pass_on_a_deflate_connection() {
    let mut c = server(false, Limits::default());
    let (ev, r) = feed(&mut c, &frame(true, 0, OpCode::Binary, b"plain"));
    r.unwrap();
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Binary, b"plain".to_vec())]);
}

#[test]
fn every_split_point_and_byte_by_byte() {
    let a = json(300);
    let b = json(5000);
    let ca = deflated(&a);
    let cb = deflated(&b);
    // Message b in three fragments with a ping between the first two.
    let third = cb.len() / 3;
    let mut stream = frame(true, RSV1, OpCode::Text, &ca);
    stream.extend(frame(false, RSV1, OpCode::Binary, &cb[..third]));
    stream.extend(frame(true, 0, OpCode::Ping, b"p"));
    stream.extend(frame(false, 0, OpCode::Continuation, &cb[third..2 * third]));
    stream.extend(frame(true, 0, OpCode::Continuation, &cb[2 * third..]));
    let want_msgs = vec![
        Ev::Msg(MessageKind::Text, a.clone()),
        Ev::Msg(MessageKind::Binary, b.clone()),
    ];
    let msgs = |ev: Vec<Ev>| -> Vec<Ev> {
        ev.into_iter()
            .filter(|e| matches!(e, Ev::Msg(..)))
            .collect()
    };
    for cut in 0..=stream.len() {
        let mut c = server(false, Limits::default());
        let (ev, r) = feed_cuts(&mut c, &stream, &[cut]);
        r.unwrap();
        assert!(ev.contains(&Ev::Ping(b"p".to_vec())), "cut {cut}");
        assert_eq!(msgs(ev), want_msgs, "cut {cut}");
    }
    let cuts: Vec<usize> = (1..stream.len()).collect();
    let mut c = server(false, Limits::default());
    let (ev, r) = feed_cuts(&mut c, &stream, &cuts);
    r.unwrap();
    assert_eq!(msgs(ev), want_msgs);
}

#[test]
fn rsv1_on_a_continuation_is_1002() {
    let c1 = deflated(&json(400));
    let mut stream = frame(false, RSV1, OpCode::Text, &c1[..10]);
    stream.extend(frame(true, RSV1, OpCode::Continuation, &c1[10..]));
    let mut c = server(false, Limits::default());
    let (ev, r) = feed(&mut c, &stream);
    assert_eq!(r, Err(ProtoError::CompressedNotFirst));
    assert_eq!(close_code_of(&ev), Some(1002));
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn rsv1_on_a_control_frame_is_1002() {
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let mut c = server(false, Limits::default());
        let (ev, r) = feed(&mut c, &frame(true, RSV1, op, b""));
        assert_eq!(r, Err(ProtoError::CompressedNotFirst), "{op:?}");
        assert_eq!(close_code_of(&ev), Some(1002));
    }
}

#[test]
fn rsv1_without_deflate_agreed_is_1002() {
    let mut c = Connection::new(Role::Server, Limits::default(), 0);
    let (ev, r) = feed(
        &mut c,
        &frame(true, RSV1, OpCode::Text, &deflated(b"hello")),
    );
    assert_eq!(r, Err(ProtoError::ReservedBits));
    assert_eq!(close_code_of(&ev), Some(1002));
    // RSV2 and RSV3 stay reserved with deflate agreed.
    for rsv in [0b010, 0b001] {
        let mut c = server(false, Limits::default());
        let (_, r) = feed(&mut c, &frame(true, rsv, OpCode::Text, b"x"));
        assert_eq!(r, Err(ProtoError::ReservedBits));
    }
}

#[test]
fn a_bomb_stops_at_the_message_limit_with_1009() {
    let limits = Limits {
        message_bytes_max: 64 * 1024,
        ..Limits::default()
    };
    let bomb = deflated(&vec![b'a'; 8 << 20]);
    assert!(
        bomb.len() < 64 * 1024,
        "the bomb itself fits the limit: {}",
        bomb.len()
    );
    for fragmented in [false, true] {
        let mut c = server(false, limits);
        let stream = if fragmented {
            let mut s = frame(false, RSV1, OpCode::Binary, &bomb[..100]);
            s.extend(frame(true, 0, OpCode::Continuation, &bomb[100..]));
            s
        } else {
            frame(true, RSV1, OpCode::Binary, &bomb)
        };
        let (ev, r) = feed(&mut c, &stream);
        assert_eq!(r, Err(ProtoError::MessageTooBig));
        assert_eq!(close_code_of(&ev), Some(1009));
        assert!(!ev.iter().any(|e| matches!(e, Ev::Msg(..))));
    }
    // Exactly at the limit passes.
    let mut c = server(false, limits);
    let at = vec![b'a'; 64 * 1024];
    let (ev, r) = feed(&mut c, &frame(true, RSV1, OpCode::Binary, &deflated(&at)));
    r.unwrap();
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Binary, at)]);
}

#[test]
fn bad_compressed_data_is_1007() {
    let mut c = server(false, Limits::default());
    let (ev, r) = feed(
        &mut c,
        &frame(true, RSV1, OpCode::Binary, &[0xff, 0xff, 0xff, 0xff]),
    );
    assert_eq!(r, Err(ProtoError::BadCompressedData));
    assert_eq!(close_code_of(&ev), Some(1007));
}

#[test]
fn compressed_text_that_is_not_utf8_is_1007() {
    let mut c = server(false, Limits::default());
    let (ev, r) = feed(
        &mut c,
        &frame(
            true,
            RSV1,
            OpCode::Text,
            &deflated(&[b'a', 0xff, 0xfe, b'b']),
        ),
    );
    assert_eq!(r, Err(ProtoError::InvalidUtf8));
    assert_eq!(close_code_of(&ev), Some(1007));
    assert!(!ev.iter().any(|e| matches!(e, Ev::Msg(..))));
}

/// RFC 7692 §7.2.3.2: two "Hello" messages, the second referring to the first's window.
#[test]
fn context_takeover_keeps_the_window_only_when_agreed() {
    let first = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    let second = [0xf2, 0x00, 0x11, 0x00, 0x00];
    let mut stream = frame(true, RSV1, OpCode::Text, &first);
    stream.extend(frame(true, RSV1, OpCode::Text, &second));

    let mut c = server(true, Limits::default());
    let (ev, r) = feed(&mut c, &stream);
    r.unwrap();
    let hello = Ev::Msg(MessageKind::Text, b"Hello".to_vec());
    assert_eq!(ev, vec![hello.clone(), hello.clone()]);
    assert!(c.heap_bytes() > 0, "the connection keeps its inflater");

    // Without takeover agreed, the second message has no window to refer to.
    let mut c = server(false, Limits::default());
    let (ev, r) = feed(&mut c, &stream);
    assert_eq!(r, Err(ProtoError::BadCompressedData));
    assert_eq!(ev[0], hello);
    assert_eq!(
        c.heap_bytes(),
        0,
        "an idle no-takeover connection holds nothing"
    );
}

#[test]
fn no_takeover_borrows_the_sinks_inflater_per_message() {
    let mut c = server(false, Limits::default());
    let mut rec = Rec::default();
    for _ in 0..3 {
        let mut f = frame(true, RSV1, OpCode::Text, &deflated(b"hello hello hello"));
        c.receive(&mut f, &mut rec).unwrap();
    }
    assert_eq!(rec.inflaters_taken, 3);
    let mut c = server(true, Limits::default());
    let mut rec = Rec::default();
    for _ in 0..3 {
        let mut f = frame(true, RSV1, OpCode::Text, &deflated(b"hello hello hello"));
        c.receive(&mut f, &mut rec).unwrap();
    }
    assert_eq!(rec.inflaters_taken, 0, "takeover uses the connection's own");
}

#[test]
fn client_role_reads_compressed_server_frames_and_sets_rsv1() {
    let mut client = Connection::new(Role::Client, Limits::default(), 42);
    client.set_deflate(Some(Deflate {
        peer_context_takeover: false,
        send_window_bits: 15,
    }));
    // A server frame (unmasked) with RSV1.
    let msg = json(1000);
    let body = deflated(&msg);
    let mut hdr = [0u8; HEADER_BYTES_MAX];
    let n = encode_header(&mut hdr, true, RSV1, OpCode::Text, body.len() as u64, None);
    let mut f = hdr[..n].to_vec();
    f.extend_from_slice(&body);
    let (ev, r) = feed(&mut client, &f);
    r.unwrap();
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Text, msg.clone())]);

    // And its own compressed message reaches a server core intact.
    let mut payload = deflated(&msg);
    let n = client.encode_message_header(MessageKind::Text, true, &mut payload, &mut hdr);
    assert_eq!(hdr[0], 0xc1);
    let mut wire = hdr[..n].to_vec();
    wire.extend_from_slice(&payload);
    let mut s = server(false, Limits::default());
    let (ev, r) = feed(&mut s, &wire);
    r.unwrap();
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Text, msg)]);
}
