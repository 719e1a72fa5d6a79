//! The connection state machine against RFC 6455: vectors, every split point, every error's close
//! code, and a client and a server core driven against each other in memory.

use proptest::prelude::*;
use ringws::proto::connection::{Connection, Initiator, Limits, MessageKind, Role, Sink, State};
use ringws::proto::error::ProtoError;
use ringws::proto::frame::{OpCode, encode_frame};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Msg(MessageKind, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
    Sent(Vec<u8>),
}

#[derive(Default)]
struct Rec(Vec<Ev>);

impl Sink for Rec {
    fn message(&mut self, kind: MessageKind, payload: &[u8]) {
        self.0.push(Ev::Msg(kind, payload.to_vec()));
    }
    fn ping(&mut self, p: &[u8]) {
        self.0.push(Ev::Ping(p.to_vec()));
    }
    fn pong(&mut self, p: &[u8]) {
        self.0.push(Ev::Pong(p.to_vec()));
    }
    fn close(&mut self, code: u16, reason: &str) {
        self.0.push(Ev::Close(code, reason.to_string()));
    }
    fn send_frame(&mut self, f: &[u8]) {
        self.0.push(Ev::Sent(f.to_vec()));
    }
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame, as a server receives it.
fn cf(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_frame(&mut v, fin, op, payload, Some(KEY));
    v
}

fn raw(first: u8, payload: &[u8]) -> Vec<u8> {
    // A masked frame with an arbitrary first byte (for RSV and opcode tests).
    let mut v = cf(true, OpCode::Binary, payload);
    v[0] = first;
    v
}

fn server() -> Connection {
    Connection::new(Role::Server, Limits::default(), 0)
}

/// Feeds `stream` in the given pieces to a fresh server; returns events and the final result.
fn feed_pieces(
    stream: &[u8],
    cuts: &[usize],
    limits: Limits,
) -> (Vec<Ev>, Result<(), ProtoError>, State) {
    let mut c = Connection::new(Role::Server, limits, 0);
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
    (rec.0, result, c.state())
}

fn feed(stream: &[u8]) -> (Vec<Ev>, Result<(), ProtoError>, State) {
    feed_pieces(stream, &[], Limits::default())
}

fn close_sent(events: &[Ev]) -> Option<u16> {
    events.iter().find_map(|e| match e {
        Ev::Sent(f) if f[0] == 0x88 && f.len() >= 4 => Some(u16::from_be_bytes([f[2], f[3]])),
        Ev::Sent(f) if f[0] == 0x88 => Some(1005),
        _ => None,
    })
}

#[test]
fn rfc_5_7_masked_hello() {
    let mut bytes = vec![
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    let mut rec = Rec::default();
    server().receive(&mut bytes, &mut rec).unwrap();
    assert_eq!(rec.0, vec![Ev::Msg(MessageKind::Text, b"Hello".to_vec())]);
}

#[test]
fn rfc_5_7_unmasked_examples_in_client_role() {
    let mut c = Connection::new(Role::Client, Limits::default(), 7);
    let mut rec = Rec::default();
    let mut bytes = vec![
        0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f, 0x8a, 0x05,
    ];
    bytes.extend_from_slice(b"Hello");
    c.receive(&mut bytes, &mut rec).unwrap();
    assert_eq!(
        rec.0,
        vec![
            Ev::Msg(MessageKind::Text, b"Hello".to_vec()),
            Ev::Pong(b"Hello".to_vec())
        ]
    );
}

#[test]
fn ping_is_answered_with_same_payload() {
    let (ev, r, st) = feed(&cf(true, OpCode::Ping, b"abc"));
    assert!(r.is_ok());
    assert_eq!(st, State::Open);
    assert_eq!(
        ev,
        vec![
            Ev::Sent(vec![0x8a, 3, b'a', b'b', b'c']),
            Ev::Ping(b"abc".to_vec())
        ]
    );
}

#[test]
fn control_frames_between_fragments() {
    let mut s = cf(false, OpCode::Text, b"fra");
    s.extend(cf(true, OpCode::Ping, b"p"));
    s.extend(cf(false, OpCode::Continuation, "gmé".as_bytes()));
    s.extend(cf(true, OpCode::Pong, b"unsolicited"));
    s.extend(cf(true, OpCode::Continuation, b"nt"));
    let (ev, r, _) = feed(&s);
    assert!(r.is_ok());
    assert_eq!(
        ev,
        vec![
            Ev::Sent(vec![0x8a, 1, b'p']),
            Ev::Ping(b"p".to_vec()),
            Ev::Pong(b"unsolicited".to_vec()),
            Ev::Msg(MessageKind::Text, "fragmént".as_bytes().to_vec()),
        ]
    );
}

/// A stream touching every path: small and large messages, fragments, controls, empty frames.
fn mixed_stream() -> Vec<u8> {
    mixed_stream_with(70_000)
}

fn mixed_stream_with(big_len: u32) -> Vec<u8> {
    let big: Vec<u8> = (0..big_len).map(|i| (i % 251) as u8).collect();
    let mut s = cf(true, OpCode::Text, "héllo €𝄞".as_bytes());
    s.extend(cf(true, OpCode::Binary, &big));
    s.extend(cf(true, OpCode::Binary, &[]));
    s.extend(cf(false, OpCode::Text, "a€".as_bytes()));
    s.extend(cf(true, OpCode::Ping, &[1, 2, 3]));
    s.extend(cf(false, OpCode::Continuation, &[]));
    s.extend(cf(true, OpCode::Continuation, "𝄞z".as_bytes()));
    s.extend(cf(true, OpCode::Binary, &big[..300]));
    s.extend(cf(true, OpCode::Close, &[0x03, 0xe8, b'b', b'y', b'e']));
    s.extend(cf(true, OpCode::Text, b"ignored after close"));
    s
}

#[test]
fn every_split_point_gives_identical_events() {
    let s = mixed_stream();
    let (whole, r, st) = feed(&s);
    assert!(r.is_ok());
    assert_eq!(st, State::Closed);
    assert_eq!(whole.iter().filter(|e| matches!(e, Ev::Msg(..))).count(), 5);
    assert_eq!(close_sent(&whole), Some(1000));
    assert!(whole.contains(&Ev::Close(1000, "bye".into())));
    // Two pieces at every cut near the frame boundaries (the big frame's interior is sampled).
    for cut in (0..s.len()).filter(|c| *c < 64 || *c % 997 == 0 || *c > s.len() - 400) {
        let (ev, r2, st2) = feed_pieces(&s, &[cut], Limits::default());
        assert_eq!((&ev, r2, st2), (&whole, Ok(()), State::Closed), "cut {cut}");
    }
    // Three pieces.
    for a in (0..200).step_by(7) {
        let (ev, _, _) = feed_pieces(&s, &[a, a + 70_013], Limits::default());
        assert_eq!(ev, whole, "cuts {a}");
    }
    // One byte at a time.
    let cuts: Vec<usize> = (1..s.len()).collect();
    let (ev, _, _) = feed_pieces(&s, &cuts, Limits::default());
    assert_eq!(ev, whole);
}

#[test]
fn every_split_point_of_a_small_stream_exhaustively() {
    // 16-bit lengths, fragments, controls and a close: every cut, no sampling.
    let s = mixed_stream_with(400);
    let (whole, r, _) = feed(&s);
    assert!(r.is_ok());
    assert_eq!(whole.iter().filter(|e| matches!(e, Ev::Msg(..))).count(), 5);
    for cut in 0..=s.len() {
        let (ev, r2, st) = feed_pieces(&s, &[cut], Limits::default());
        assert_eq!((&ev, r2, st), (&whole, Ok(()), State::Closed), "cut {cut}");
    }
}

#[test]
fn split_utf8_code_point_across_fragments_is_valid() {
    let text = "€".as_bytes(); // e2 82 ac
    let mut s = cf(false, OpCode::Text, &text[..1]);
    s.extend(cf(false, OpCode::Continuation, &text[1..2]));
    s.extend(cf(true, OpCode::Continuation, &text[2..]));
    let (ev, r, _) = feed(&s);
    assert!(r.is_ok());
    assert_eq!(ev, vec![Ev::Msg(MessageKind::Text, text.to_vec())]);
}

fn expect_fail(stream: &[u8], err: ProtoError, code: u16) {
    let (ev, r, st) = feed(stream);
    assert_eq!(r, Err(err), "{stream:x?}");
    assert_eq!(err.close_code(), code);
    assert_eq!(close_sent(&ev), Some(code), "{ev:?}");
    assert_eq!(st, State::Closed);
}

#[test]
fn every_violation_gets_its_close_code() {
    expect_fail(&raw(0xC1, b"x"), ProtoError::ReservedBits, 1002);
    expect_fail(&raw(0x83, b"x"), ProtoError::ReservedOpcode, 1002);
    expect_fail(&raw(0x8B, b"x"), ProtoError::ReservedOpcode, 1002);
    let mut unmasked = Vec::new();
    encode_frame(&mut unmasked, true, OpCode::Text, b"hi", None);
    expect_fail(&unmasked, ProtoError::BadMask, 1002);
    expect_fail(
        &cf(false, OpCode::Ping, b""),
        ProtoError::FragmentedControl,
        1002,
    );
    expect_fail(
        &cf(true, OpCode::Ping, &[0; 126]),
        ProtoError::ControlTooLong,
        1002,
    );
    expect_fail(
        &cf(true, OpCode::Continuation, b"x"),
        ProtoError::UnexpectedContinuation,
        1002,
    );
    let mut s = cf(false, OpCode::Text, b"a");
    s.extend(cf(true, OpCode::Binary, b"b"));
    expect_fail(&s, ProtoError::ExpectedContinuation, 1002);
    expect_fail(
        &cf(true, OpCode::Close, &[3]),
        ProtoError::CloseLengthOne,
        1002,
    );
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        expect_fail(
            &cf(true, OpCode::Close, &code.to_be_bytes()),
            ProtoError::InvalidCloseCode(code),
            1002,
        );
    }
    expect_fail(
        &cf(true, OpCode::Close, &[0x03, 0xe8, 0xff]),
        ProtoError::InvalidUtf8,
        1007,
    );
    expect_fail(
        &cf(true, OpCode::Text, &[0xce, 0xba, 0xff]),
        ProtoError::InvalidUtf8,
        1007,
    );
    let mut s = cf(false, OpCode::Text, "ok".as_bytes());
    s.extend(cf(true, OpCode::Continuation, &[0xe2, 0x82]));
    expect_fail(&s, ProtoError::InvalidUtf8, 1007);
}

#[test]
fn invalid_utf8_fails_before_the_message_ends() {
    // The first fragment is already invalid: the error comes without the final fragment.
    let (ev, r, _) = feed(&cf(false, OpCode::Text, &[b'a', 0xc0, 0x80]));
    assert_eq!(r, Err(ProtoError::InvalidUtf8));
    assert_eq!(close_sent(&ev), Some(1007));
}

#[test]
fn valid_close_codes_are_echoed() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let (ev, r, st) = feed(&cf(true, OpCode::Close, &code.to_be_bytes()));
        assert!(r.is_ok(), "{code}");
        assert_eq!(st, State::Closed);
        assert_eq!(close_sent(&ev), Some(code));
        assert!(ev.contains(&Ev::Close(code, String::new())));
    }
    let (ev, _, _) = feed(&cf(true, OpCode::Close, &[]));
    assert_eq!(
        ev,
        vec![Ev::Sent(vec![0x88, 0]), Ev::Close(1005, String::new())]
    );
}

#[test]
fn limits_answer_1009() {
    let limits = Limits {
        frame_bytes_max: 100,
        message_bytes_max: 150,
        message_fragments_max: 3,
    };
    let (ev, r, _) = feed_pieces(&cf(true, OpCode::Binary, &[0; 101]), &[], limits);
    assert_eq!(
        (r, close_sent(&ev)),
        (Err(ProtoError::FrameTooBig), Some(1009))
    );
    let mut s = cf(false, OpCode::Binary, &[0; 100]);
    s.extend(cf(true, OpCode::Continuation, &[0; 51]));
    let (ev, r, _) = feed_pieces(&s, &[], limits);
    assert_eq!(
        (r, close_sent(&ev)),
        (Err(ProtoError::MessageTooBig), Some(1009))
    );
    let mut s = Vec::new();
    for _ in 0..3 {
        s.extend(cf(
            false,
            if s.is_empty() {
                OpCode::Binary
            } else {
                OpCode::Continuation
            },
            b"x",
        ));
    }
    s.extend(cf(true, OpCode::Continuation, b"x"));
    let (ev, r, _) = feed_pieces(&s, &[], limits);
    assert_eq!(
        (r, close_sent(&ev)),
        (Err(ProtoError::TooManyFragments), Some(1009))
    );
    // Fail fast: the header alone is enough, the payload never arrives.
    let whole = cf(true, OpCode::Binary, &[0; 151]);
    let (ev, r, _) = feed_pieces(
        &whole[..8],
        &[],
        Limits {
            frame_bytes_max: 1000,
            ..limits
        },
    );
    assert_eq!(
        (r, close_sent(&ev)),
        (Err(ProtoError::MessageTooBig), Some(1009))
    );
}

#[test]
fn input_after_failure_or_close_is_ignored() {
    let mut c = server();
    let mut rec = Rec::default();
    let mut bad = raw(0x83, b"x");
    assert!(c.receive(&mut bad, &mut rec).is_err());
    let before = rec.0.len();
    let mut more = cf(true, OpCode::Text, b"late");
    assert!(c.receive(&mut more, &mut rec).is_ok());
    assert_eq!(rec.0.len(), before);
    assert_eq!(c.initiator(), Some(Initiator::Local));
}

#[test]
fn local_close_then_peer_close() {
    let mut c = server();
    let mut rec = Rec::default();
    c.close(1001, "going away", &mut rec);
    assert_eq!(c.state(), State::Closing);
    assert!(!c.can_send_data());
    assert_eq!(close_sent(&rec.0), Some(1001));
    // Data may still arrive after our Close; it is parsed past, not delivered (so a closing
    // connection holds no message buffer). A ping is not answered any more.
    let mut s = cf(true, OpCode::Text, b"in flight");
    s.extend(cf(true, OpCode::Ping, b""));
    s.extend(cf(true, OpCode::Close, &1001u16.to_be_bytes()));
    c.receive(&mut s, &mut rec).unwrap();
    assert_eq!(c.state(), State::Closed);
    assert_eq!(c.initiator(), Some(Initiator::Local));
    let sent = rec.0.iter().filter(|e| matches!(e, Ev::Sent(_))).count();
    assert_eq!(sent, 1, "only our Close went out: {:?}", rec.0);
    assert!(
        !rec.0.iter().any(|e| matches!(e, Ev::Msg(..))),
        "nothing is delivered after our Close: {:?}",
        rec.0
    );
}

/// A message being gathered when we close is dropped with its buffer, and the rest of it and
/// what follows (fragments, a compressed-looking frame, a ping) is parsed past: nothing is
/// delivered and nothing is held, while a violation is still found.
#[test]
fn closing_connection_gathers_nothing() {
    let mut c = server();
    let mut rec = Rec::default();
    let mut first = cf(false, OpCode::Binary, &[1; 1000]);
    c.receive(&mut first, &mut rec).unwrap();
    assert!(c.heap_bytes() >= 1000, "the first fragment is gathered");
    c.close(1013, "try again later", &mut rec);
    assert_eq!(c.heap_bytes(), 0, "our Close drops what was gathered");
    let mut s = cf(false, OpCode::Continuation, &[2; 5000]);
    s.extend(cf(true, OpCode::Ping, b"p"));
    s.extend(cf(true, OpCode::Continuation, &[3; 5000]));
    s.extend(cf(true, OpCode::Text, &[b'x'; 3000]));
    c.receive(&mut s, &mut rec).unwrap();
    assert_eq!(c.heap_bytes(), 0);
    assert_eq!(c.state(), State::Closing);
    assert!(
        !rec.0.iter().any(|e| matches!(e, Ev::Msg(..))),
        "{:?}",
        rec.0
    );
    // Framing is still checked: a continuation with no message is a violation.
    let mut bad = cf(true, OpCode::Continuation, b"x");
    assert!(c.receive(&mut bad, &mut rec).is_err());
    assert_eq!(c.state(), State::Closed);
}

#[test]
fn idle_connection_holds_no_heap() {
    let mut c = server();
    let mut rec = Rec::default();
    let mut s = cf(false, OpCode::Binary, &[1; 1000]);
    s.extend(cf(true, OpCode::Continuation, &[2; 1000]));
    c.receive(&mut s, &mut rec).unwrap();
    assert_eq!(c.heap_bytes(), 0);
    assert!(
        std::mem::size_of::<Connection>() <= 160,
        "{}",
        std::mem::size_of::<Connection>()
    );
}

/// Client and server cores talking through in-memory pipes.
#[test]
fn client_and_server_in_memory() {
    let mut client = Connection::new(Role::Client, Limits::default(), 0x1234_5678);
    let mut server = server();
    let (mut c_rec, mut s_rec) = (Rec::default(), Rec::default());
    let messages: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![7; 200_000], Vec::new()];
    for m in &messages {
        let mut payload = m.clone();
        let mut hdr = [0u8; 14];
        let n = client.encode_data_header(MessageKind::Binary, &mut payload, &mut hdr);
        let mut wire = hdr[..n].to_vec();
        wire.extend_from_slice(&payload);
        for piece in wire.chunks_mut(16 * 1024) {
            server.receive(piece, &mut s_rec).unwrap();
        }
    }
    let got: Vec<Vec<u8>> = s_rec
        .0
        .iter()
        .filter_map(|e| {
            if let Ev::Msg(_, m) = e {
                Some(m.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(got, messages);
    // Heartbeat: the server pings, the client answers, the server sees the pong.
    server.ping(b"hb", &mut s_rec);
    let mut to_client = pop_sent(&mut s_rec);
    client.receive(&mut to_client, &mut c_rec).unwrap();
    let mut to_server = pop_sent(&mut c_rec);
    server.receive(&mut to_server, &mut s_rec).unwrap();
    assert!(s_rec.0.contains(&Ev::Pong(b"hb".to_vec())));
    // The client closes; the server echoes; both end Closed, the client as initiator.
    client.close(1000, "done", &mut c_rec);
    let mut to_server = pop_sent(&mut c_rec);
    server.receive(&mut to_server, &mut s_rec).unwrap();
    let mut to_client = pop_sent(&mut s_rec);
    client.receive(&mut to_client, &mut c_rec).unwrap();
    assert_eq!(
        (client.state(), server.state()),
        (State::Closed, State::Closed)
    );
    assert_eq!(
        (client.initiator(), server.initiator()),
        (Some(Initiator::Local), Some(Initiator::Peer))
    );
    assert!(s_rec.0.contains(&Ev::Close(1000, "done".into())));
    assert!(c_rec.0.contains(&Ev::Close(1000, String::new())));
}

fn pop_sent(rec: &mut Rec) -> Vec<u8> {
    let mut out = Vec::new();
    rec.0.retain(|e| match e {
        Ev::Sent(f) => {
            out.extend_from_slice(f);
            false
        }
        _ => true,
    });
    assert!(!out.is_empty(), "nothing was sent");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Encode → parse round trip of random messages, fragmentations and chunkings.
    #[test]
    fn encode_parse_round_trip(
        msgs in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..3000), 1usize..4), 1..6),
        chunk in 1usize..5000,
    ) {
        let mut stream = Vec::new();
        let mut expect = Vec::new();
        for (text, bytes, parts) in &msgs {
            let payload = if *text { String::from_utf8_lossy(bytes).into_owned().into_bytes() } else { bytes.clone() };
            let step = payload.len().div_ceil(*parts).max(1);
            let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&[][..]] } else { payload.chunks(step).collect() };
            for (i, p) in pieces.iter().enumerate() {
                let op = if i > 0 { OpCode::Continuation } else if *text { OpCode::Text } else { OpCode::Binary };
                stream.extend(cf(i + 1 == pieces.len(), op, p));
            }
            let kind = if *text { MessageKind::Text } else { MessageKind::Binary };
            expect.push(Ev::Msg(kind, payload));
        }
        let cuts: Vec<usize> = (chunk..stream.len()).step_by(chunk).collect();
        let (ev, r, st) = feed_pieces(&stream, &cuts, Limits::default());
        prop_assert!(r.is_ok());
        prop_assert_eq!(st, State::Open);
        prop_assert_eq!(ev, expect);
    }

    /// Random bytes never panic the server core, and any error comes with exactly one Close.
    #[test]
    fn random_input_never_panics(data in prop::collection::vec(any::<u8>(), 0..400), cut in 0usize..400) {
        let cut = cut.min(data.len());
        let (ev, r, _) = feed_pieces(&data, &[cut], Limits::default());
        let closes = ev.iter().filter(|e| matches!(e, Ev::Sent(f) if f[0] == 0x88)).count();
        if let Err(e) = r {
            prop_assert_eq!(closes, 1);
            prop_assert_eq!(close_sent(&ev), Some(e.close_code()));
        }
    }
}

/// A sink that lends reassembly buffers from a pool, as the runtime does.
#[derive(Default)]
struct Pooled {
    rec: Rec,
    pool: Vec<Vec<u8>>,
    lent: usize,
}

impl Sink for Pooled {
    fn message(&mut self, kind: MessageKind, payload: &[u8]) {
        self.rec.message(kind, payload);
    }
    fn send_frame(&mut self, f: &[u8]) {
        self.rec.send_frame(f);
    }
    fn take_buffer(&mut self) -> Vec<u8> {
        self.lent += 1;
        self.pool.pop().unwrap_or_default()
    }
    fn give_buffer(&mut self, buf: Vec<u8>) {
        assert!(buf.is_empty(), "a returned buffer is cleared");
        self.pool.push(buf);
    }
}

#[test]
fn gathered_messages_reuse_the_sinks_buffer() {
    let mut c = server();
    let mut sink = Pooled::default();
    let mut ptrs = Vec::new();
    for round in 0..3u8 {
        let mut s = cf(false, OpCode::Binary, &[round; 3000]);
        s.extend(cf(true, OpCode::Continuation, &[round; 3000]));
        c.receive(&mut s, &mut sink).unwrap();
        assert_eq!(c.heap_bytes(), 0, "the buffer went back to the sink");
        ptrs.push(sink.pool[0].as_ptr());
    }
    assert_eq!(sink.lent, 3);
    assert_eq!(sink.pool.len(), 1);
    assert!(
        ptrs.windows(2).all(|w| w[0] == w[1]),
        "the same allocation served every message"
    );
    let msgs: Vec<_> = sink
        .rec
        .0
        .iter()
        .filter(|e| matches!(e, Ev::Msg(..)))
        .collect();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[2], &Ev::Msg(MessageKind::Binary, vec![2; 6000]));
}
