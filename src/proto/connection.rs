//! One WebSocket connection after the handshake: frames in, events and control frames out.
//!
//! `Connection::receive` takes the bytes the kernel put in a receive buffer, unmasks them in place
//! and reports whole messages to a [`Sink`]. A message that is complete inside one buffer is handed
//! over as a slice of that buffer, with no copy. Only a fragmented message, or one that straddles
//! two receive buffers, is gathered in a reassembly buffer, allocated for that message and freed
//! after it, so an idle connection holds none. A frame header split across buffers waits in a
//! 14-byte spill inside the connection.
//!
//! With permessage-deflate agreed (RFC 7692, [`Connection::set_deflate`]), a message whose first
//! frame has RSV1 set is gathered compressed (in place if it is whole in one buffer), inflated at
//! its end into a lent buffer, capped at `message_bytes_max` (→ 1009), validated (text) and
//! delivered. The inflater is lent by the sink (one per worker) unless the peer keeps its window
//! across messages, in which case the connection holds its own, made at the first compressed
//! message.
//!
//! States (RFC 6455 §7):
//!
//! | state   | how it is entered                                     | data may be sent |
//! |---------|-------------------------------------------------------|------------------|
//! | Open    | after the handshake                                   | yes              |
//! | Closing | we sent Close and wait for the peer's (initiator: us) | no               |
//! | Closed  | both Close frames passed, or we failed the connection, or TCP ended | no  |
//!
//! In Closing, the peer's data frames are still parsed (to find its Close) but neither gathered nor
//! delivered, so a closing connection holds no message buffer.
//!
//! When the peer starts the close, its Close is echoed at once, so the state goes straight from
//! Open to Closed (initiator: peer). After a protocol violation the Close with its code is sent
//! and the connection is Closed: per §7.1.7 no further input is processed. In Closed the runtime
//! closes TCP (the server first, §7.1.1).

use super::deflate::Inflater;
use super::error::{ProtoError, close_code};
use super::frame::{
    self, CONTROL_PAYLOAD_MAX, FrameHeader, HEADER_BYTES_MAX, HeaderParse, OpCode, RSV1,
};
use super::mask::unmask;
use super::utf8::{self, Utf8Validator};
use crate::config::Config;

pub use super::frame::Role;

/// Size limits that the connection enforces on what it receives (each → 1009).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub frame_bytes_max: u64,
    pub message_bytes_max: u64,
    pub message_fragments_max: u32,
}

impl Limits {
    pub fn from_config(c: &Config) -> Limits {
        Limits {
            frame_bytes_max: c.frame_bytes_max,
            message_bytes_max: c.message_bytes_max,
            message_fragments_max: c.message_fragments_max,
        }
    }
}

impl Default for Limits {
    /// The defaults of [`Config`], without building one (`Config::default` asks the OS for the
    /// core count, which is far too slow to do per connection).
    fn default() -> Self {
        Limits {
            frame_bytes_max: crate::config::FRAME_BYTES_MAX_DEFAULT,
            message_bytes_max: crate::config::MESSAGE_BYTES_MAX_DEFAULT,
            message_fragments_max: crate::config::MESSAGE_FRAGMENTS_MAX_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Open,
    Closing,
    Closed,
}

/// Who sent the first Close frame (or failed the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    Local,
    Peer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

/// Where a connection delivers what it received and the frames the protocol itself must send.
pub trait Sink {
    /// A whole message: unmasked and, for text, valid UTF-8.
    fn message(&mut self, kind: MessageKind, payload: &[u8]);
    /// A Ping arrived; its Pong has already been passed to `send_frame`.
    fn ping(&mut self, _payload: &[u8]) {}
    /// A Pong arrived.
    fn pong(&mut self, _payload: &[u8]) {}
    /// The peer's Close: its code (1005 if it had none) and reason.
    fn close(&mut self, _code: u16, _reason: &str) {}
    /// A whole encoded frame that the protocol must send (Pong, Close, Ping).
    fn send_frame(&mut self, frame: &[u8]);
    /// An empty buffer to gather a fragmented or straddling message in. A runtime may lend one
    /// from a pool so that such messages allocate nothing in steady state.
    fn take_buffer(&mut self) -> Vec<u8> {
        Vec::new()
    }
    /// The buffer from [`Sink::take_buffer`] once its message was delivered (cleared).
    fn give_buffer(&mut self, _buf: Vec<u8>) {}
    /// An inflater for one compressed message from an empty window (no context takeover). A
    /// runtime lends one per worker; the default makes a new one each time.
    fn take_inflater(&mut self) -> Box<Inflater> {
        Box::default()
    }
    /// The inflater from [`Sink::take_inflater`], after its message.
    #[allow(clippy::boxed_local)] // a runtime keeps the box to lend it again
    fn give_inflater(&mut self, _inflater: Box<Inflater>) {}
}

/// permessage-deflate as agreed for one connection, seen from this endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The peer keeps its LZ77 window across messages (we must keep an inflater).
    pub peer_context_takeover: bool,
    /// The window (log2 bytes, 8–15) that our compressed messages may use.
    pub send_window_bits: u8,
}

/// Heap bytes of one inflater: zlib-rs 0.6.8 allocates 47,552 B at creation whatever the window
/// size (measured with a counting allocator), so a smaller client window saves nothing.
pub const INFLATER_HEAP_BYTES: usize = 47_552;

/// The frame whose payload is being received.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    opcode: OpCode,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes of this frame not received yet.
    remaining: u64,
    /// Payload bytes of this frame already received (the mask phase, and where control bytes go).
    done: u64,
}

/// A data message in progress (between its first frame and its FIN frame).
#[derive(Debug, Clone, Copy)]
struct InMessage {
    kind: MessageKind,
    bytes: u64,
    fragments: u32,
    /// True while the message is gathered in `reassembly` rather than delivered in place.
    gathering: bool,
    /// RSV1 on its first frame: the payload is deflated (RFC 7692).
    compressed: bool,
}

/// The protocol state of one connection. Inline size is kept small because a million of them may
/// sit idle; the two `Vec`s hold no memory unless a message or control frame straddles buffers.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    state: State,
    initiator: Option<Initiator>,
    header_spill_len: u8,
    header_spill: [u8; HEADER_BYTES_MAX],
    frame: Option<InFrame>,
    message: Option<InMessage>,
    utf8: Utf8Validator,
    limits: Limits,
    /// State of the mask-key generator (client role only).
    rng: u64,
    reassembly: Vec<u8>,
    control: Vec<u8>,
    deflate: Option<Deflate>,
    /// The inflater kept across messages when the peer keeps its window.
    inflater: Option<Box<Inflater>>,
}

impl Connection {
    pub fn new(role: Role, limits: Limits, mask_seed: u64) -> Self {
        Connection {
            role,
            state: State::Open,
            initiator: None,
            header_spill_len: 0,
            header_spill: [0; HEADER_BYTES_MAX],
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            limits,
            rng: mask_seed | 1,
            reassembly: Vec::new(),
            control: Vec::new(),
            deflate: None,
            inflater: None,
        }
    }

    /// Turns permessage-deflate on (as agreed in the handshake) or off. Call before any frame.
    pub fn set_deflate(&mut self, deflate: Option<Deflate>) {
        self.deflate = deflate;
        self.inflater = None;
    }

    /// permessage-deflate as agreed, if it was.
    pub fn deflate(&self) -> Option<Deflate> {
        self.deflate
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Who started the close, once one has started.
    pub fn initiator(&self) -> Option<Initiator> {
        self.initiator
    }

    /// Data frames may be sent only while Open (never after our Close).
    pub fn can_send_data(&self) -> bool {
        self.state == State::Open
    }

    /// Bytes of heap memory this connection holds right now (an inflater counted as
    /// [`INFLATER_HEAP_BYTES`]).
    pub fn heap_bytes(&self) -> usize {
        let inflater = if self.inflater.is_some() {
            INFLATER_HEAP_BYTES
        } else {
            0
        };
        self.reassembly.capacity() + self.control.capacity() + inflater
    }

    /// Parses received bytes in place. See the module docs for what happens on a violation.
    pub fn receive(&mut self, data: &mut [u8], sink: &mut impl Sink) -> Result<(), ProtoError> {
        if self.state == State::Closed {
            return Ok(()); // nothing after a Close or a failure is processed (§5.5.1, §7.1.7)
        }
        match self.receive_frames(data, sink) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fail(e, sink);
                Err(e)
            }
        }
    }

    fn receive_frames(&mut self, data: &mut [u8], sink: &mut impl Sink) -> Result<(), ProtoError> {
        let mut pos = 0;
        loop {
            if self.state == State::Closed {
                return Ok(());
            }
            let frame = match self.frame {
                Some(f) => f,
                None => match self.take_header(data, &mut pos)? {
                    Some(h) => self.begin_frame(h)?,
                    None => return Ok(()),
                },
            };
            let take = frame.remaining.min((data.len() - pos) as u64) as usize;
            if take == 0 && frame.remaining > 0 {
                return Ok(()); // the payload starts in the next buffer
            }
            let chunk = &mut data[pos..pos + take];
            pos += take;
            self.payload(frame, chunk, sink)?;
            if pos == data.len() && self.frame.is_some() {
                return Ok(());
            }
        }
    }

    /// Reads the next header from the spill and/or `data[*pos..]`; None if more bytes are needed.
    fn take_header(
        &mut self,
        data: &[u8],
        pos: &mut usize,
    ) -> Result<Option<FrameHeader>, ProtoError> {
        let rsv_allowed = if self.deflate.is_some() { RSV1 } else { 0 };
        if self.header_spill_len == 0 {
            return match frame::parse_header(&data[*pos..], self.role, rsv_allowed)? {
                HeaderParse::Header(h) => {
                    *pos += h.header_len as usize;
                    Ok(Some(h))
                }
                HeaderParse::Incomplete { .. } => {
                    let rest = &data[*pos..];
                    self.header_spill[..rest.len()].copy_from_slice(rest);
                    self.header_spill_len = rest.len() as u8;
                    *pos = data.len();
                    Ok(None)
                }
            };
        }
        loop {
            let have = self.header_spill_len as usize;
            match frame::parse_header(&self.header_spill[..have], self.role, rsv_allowed)? {
                HeaderParse::Header(h) => {
                    self.header_spill_len = 0;
                    return Ok(Some(h));
                }
                HeaderParse::Incomplete { need } => {
                    let take = (need - have).min(data.len() - *pos);
                    if take == 0 {
                        return Ok(None);
                    }
                    self.header_spill[have..have + take].copy_from_slice(&data[*pos..*pos + take]);
                    self.header_spill_len += take as u8;
                    *pos += take;
                }
            }
        }
    }

    /// Checks a new frame against the message in progress and the limits.
    fn begin_frame(&mut self, h: FrameHeader) -> Result<InFrame, ProtoError> {
        // Only RSV1 can be set here (parse_header refuses bits no extension allows), and only on
        // the first frame of a data message (RFC 7692 §6.1).
        if h.rsv != 0 && (h.opcode.is_control() || h.opcode == OpCode::Continuation) {
            return Err(ProtoError::CompressedNotFirst);
        }
        if !h.opcode.is_control() {
            self.begin_data_frame(&h)?;
        }
        let f = InFrame {
            opcode: h.opcode,
            fin: h.fin,
            mask: h.mask.unwrap_or([0; 4]),
            remaining: h.payload_len,
            done: 0,
        };
        self.frame = Some(f);
        Ok(f)
    }

    fn begin_data_frame(&mut self, h: &FrameHeader) -> Result<(), ProtoError> {
        let kind = match (h.opcode, self.message) {
            (OpCode::Continuation, None) => return Err(ProtoError::UnexpectedContinuation),
            (OpCode::Continuation, Some(m)) => m.kind,
            (_, Some(_)) => return Err(ProtoError::ExpectedContinuation),
            (OpCode::Text, None) => MessageKind::Text,
            (_, None) => MessageKind::Binary,
        };
        if h.payload_len > self.limits.frame_bytes_max {
            return Err(ProtoError::FrameTooBig);
        }
        let m = self.message.get_or_insert(InMessage {
            kind,
            bytes: 0,
            fragments: 0,
            gathering: false,
            compressed: h.rsv & RSV1 != 0,
        });
        m.bytes += h.payload_len;
        m.fragments += 1;
        // A compressed message is held to the limit once inflated; on the wire it may exceed
        // it by deflate's framing overhead (incompressible data in stored blocks).
        let max = self.limits.message_bytes_max;
        let wire_max = if m.compressed {
            max.saturating_add(max / 64 + 64)
        } else {
            max
        };
        if m.bytes > wire_max {
            return Err(ProtoError::MessageTooBig);
        }
        if m.fragments > self.limits.message_fragments_max {
            return Err(ProtoError::TooManyFragments);
        }
        Ok(())
    }

    /// Handles the next piece of the current frame's payload (possibly empty).
    fn payload(
        &mut self,
        mut f: InFrame,
        chunk: &mut [u8],
        sink: &mut impl Sink,
    ) -> Result<(), ProtoError> {
        if self.role == Role::Server {
            unmask(chunk, f.mask, (f.done & 3) as usize);
        }
        let whole = f.done == 0 && chunk.len() as u64 == f.remaining;
        f.done += chunk.len() as u64;
        f.remaining -= chunk.len() as u64;
        self.frame = (f.remaining > 0).then_some(f);
        if f.opcode.is_control() {
            return self.control_payload(f, chunk, whole, sink);
        }
        self.data_payload(f, chunk, whole, sink)
    }

    fn data_payload(
        &mut self,
        f: InFrame,
        chunk: &[u8],
        whole: bool,
        sink: &mut impl Sink,
    ) -> Result<(), ProtoError> {
        let mut m = self.message.expect("a data frame always has a message");
        let done = f.fin && f.remaining == 0;
        if self.state == State::Closing {
            // We sent Close: the rest of the peer's input is read only to find its Close. Data
            // is neither gathered nor delivered (the handler may send nothing more anyway), so a
            // peer that goes on sending cannot make a closing connection hold memory.
            self.message = (!done).then_some(m);
            return Ok(());
        }
        if m.compressed {
            return self.compressed_payload(m, chunk, whole, done, sink);
        }
        if done && whole && !m.gathering {
            // The fast path: a whole unfragmented message inside this buffer, delivered in place.
            if m.kind == MessageKind::Text {
                utf8::validate(chunk).map_err(|_| ProtoError::InvalidUtf8)?;
            }
            self.message = None;
            sink.message(m.kind, chunk);
            return Ok(());
        }
        if m.kind == MessageKind::Text {
            self.utf8.feed(chunk).map_err(|_| ProtoError::InvalidUtf8)?;
        }
        self.gather(&mut m, chunk, sink);
        if done {
            if m.kind == MessageKind::Text {
                self.utf8.finish().map_err(|_| ProtoError::InvalidUtf8)?;
            }
            self.message = None;
            sink.message(m.kind, &self.reassembly);
            let mut buf = std::mem::take(&mut self.reassembly);
            buf.clear();
            sink.give_buffer(buf);
        }
        Ok(())
    }

    /// Appends `chunk` to the message being gathered, borrowing the buffer from the sink at its
    /// first piece. Grown by what actually arrives, never by what a header claims: a peer must not
    /// make the server reserve memory with a 15-byte frame header.
    fn gather(&mut self, m: &mut InMessage, chunk: &[u8], sink: &mut impl Sink) {
        if !m.gathering {
            m.gathering = true;
            self.reassembly = sink.take_buffer();
            self.reassembly.clear();
        }
        self.reassembly.extend_from_slice(chunk);
        self.message = Some(*m);
    }

    /// A piece of a compressed message: inflated in place if it is whole here, else gathered
    /// (compressed) and inflated at its end.
    fn compressed_payload(
        &mut self,
        mut m: InMessage,
        chunk: &[u8],
        whole: bool,
        done: bool,
        sink: &mut impl Sink,
    ) -> Result<(), ProtoError> {
        if done && whole && !m.gathering {
            self.message = None;
            return self.inflate_and_deliver(m.kind, chunk, sink);
        }
        self.gather(&mut m, chunk, sink);
        if done {
            self.message = None;
            let mut input = std::mem::take(&mut self.reassembly);
            let result = self.inflate_and_deliver(m.kind, &input, sink);
            input.clear();
            sink.give_buffer(input);
            return result;
        }
        Ok(())
    }

    fn inflate_and_deliver(
        &mut self,
        kind: MessageKind,
        input: &[u8],
        sink: &mut impl Sink,
    ) -> Result<(), ProtoError> {
        let takeover = self.deflate.is_some_and(|d| d.peer_context_takeover);
        let limit = self.limits.message_bytes_max;
        let mut out = sink.take_buffer();
        out.clear();
        let mut result = if takeover {
            let inflater = self.inflater.get_or_insert_with(Box::default);
            inflater.inflate_message(input, &mut out, limit, false)
        } else {
            let mut inflater = sink.take_inflater();
            let r = inflater.inflate_message(input, &mut out, limit, true);
            sink.give_inflater(inflater);
            r
        };
        if result.is_ok() && kind == MessageKind::Text && utf8::validate(&out).is_err() {
            result = Err(ProtoError::InvalidUtf8);
        }
        if result.is_ok() {
            sink.message(kind, &out);
        }
        out.clear();
        sink.give_buffer(out);
        result
    }

    fn control_payload(
        &mut self,
        f: InFrame,
        chunk: &[u8],
        whole: bool,
        sink: &mut impl Sink,
    ) -> Result<(), ProtoError> {
        if whole {
            return self.control_frame(f.opcode, chunk, sink);
        }
        self.control.extend_from_slice(chunk);
        if f.remaining == 0 {
            let payload = std::mem::take(&mut self.control);
            self.control_frame(f.opcode, &payload, sink)?;
        }
        Ok(())
    }

    fn control_frame(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        sink: &mut impl Sink,
    ) -> Result<(), ProtoError> {
        match opcode {
            OpCode::Ping => {
                if self.state == State::Open {
                    self.send_control(OpCode::Pong, payload, sink);
                }
                sink.ping(payload);
            }
            OpCode::Pong => sink.pong(payload),
            OpCode::Close => self.peer_close(payload, sink)?,
            _ => unreachable!("only control opcodes reach here"),
        }
        Ok(())
    }

    /// The peer's Close: validate it, echo it if we have not sent ours, and end up Closed.
    fn peer_close(&mut self, payload: &[u8], sink: &mut impl Sink) -> Result<(), ProtoError> {
        let (code, reason) = parse_close_payload(payload)?;
        if self.state == State::Open {
            self.initiator = Some(Initiator::Peer);
            let echo = if code == close_code::NO_STATUS {
                &[][..]
            } else {
                &payload[..2]
            };
            self.send_control(OpCode::Close, echo, sink);
        }
        self.transition(State::Closed);
        self.drop_buffers();
        sink.close(code, reason);
        Ok(())
    }

    /// Fails the connection (§7.1.7): our Close with the violation's code, then nothing more.
    fn fail(&mut self, e: ProtoError, sink: &mut impl Sink) {
        if self.state == State::Open {
            self.initiator = Some(Initiator::Local);
            self.send_close_frame(e.close_code(), e.reason(), sink);
        }
        self.transition(State::Closed);
        self.drop_buffers();
    }

    /// Starts the close handshake from our side. Does nothing unless Open.
    pub fn close(&mut self, code: u16, reason: &str, sink: &mut impl Sink) {
        if self.state != State::Open {
            return;
        }
        self.initiator = Some(Initiator::Local);
        self.send_close_frame(code, reason, sink);
        self.transition(State::Closing);
        // What was being gathered is dropped: data after our Close is not delivered.
        if let Some(m) = self.message.as_mut() {
            m.gathering = false;
        }
        self.reassembly = Vec::new();
        self.inflater = None;
    }

    /// Sends a Ping (for heartbeats). Does nothing unless Open.
    pub fn ping(&mut self, payload: &[u8], sink: &mut impl Sink) {
        if self.state == State::Open {
            let n = payload.len().min(CONTROL_PAYLOAD_MAX);
            self.send_control(OpCode::Ping, &payload[..n], sink);
        }
    }

    /// The TCP connection ended (EOF, reset or our close): nothing more will pass.
    pub fn transport_closed(&mut self) {
        if self.state != State::Closed {
            self.transition(State::Closed);
        }
        self.drop_buffers();
    }

    /// Writes a data frame header for this role into `out` and returns its length. In the client
    /// role the payload is masked in place with a fresh key.
    pub fn encode_data_header(
        &mut self,
        kind: MessageKind,
        payload: &mut [u8],
        out: &mut [u8; HEADER_BYTES_MAX],
    ) -> usize {
        self.encode_message_header(kind, false, payload, out)
    }

    /// [`Connection::encode_data_header`] for a whole message, `compressed` setting RSV1 (the
    /// payload must then be the output of a [`super::deflate::Deflater`] and deflate agreed).
    pub fn encode_message_header(
        &mut self,
        kind: MessageKind,
        compressed: bool,
        payload: &mut [u8],
        out: &mut [u8; HEADER_BYTES_MAX],
    ) -> usize {
        debug_assert!(!compressed || self.deflate.is_some());
        let opcode = match kind {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        };
        let mask = self.next_mask();
        if let Some(m) = mask {
            unmask(payload, m, 0);
        }
        let rsv = if compressed { RSV1 } else { 0 };
        frame::encode_header(out, true, rsv, opcode, payload.len() as u64, mask)
    }

    fn send_close_frame(&mut self, code: u16, reason: &str, sink: &mut impl Sink) {
        let mut payload = [0u8; CONTROL_PAYLOAD_MAX];
        let n = if close_code::is_valid_on_wire(code) {
            payload[..2].copy_from_slice(&code.to_be_bytes());
            let r = truncate_utf8(reason, CONTROL_PAYLOAD_MAX - 2);
            payload[2..2 + r.len()].copy_from_slice(r.as_bytes());
            2 + r.len()
        } else {
            0
        };
        self.send_control(OpCode::Close, &payload[..n], sink);
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8], sink: &mut impl Sink) {
        debug_assert!(payload.len() <= CONTROL_PAYLOAD_MAX);
        let mut buf = [0u8; HEADER_BYTES_MAX + CONTROL_PAYLOAD_MAX];
        let mask = self.next_mask();
        let n = frame::encode_header(
            (&mut buf[..HEADER_BYTES_MAX]).try_into().unwrap(),
            true,
            0,
            opcode,
            payload.len() as u64,
            mask,
        );
        buf[n..n + payload.len()].copy_from_slice(payload);
        if let Some(m) = mask {
            unmask(&mut buf[n..n + payload.len()], m, 0);
        }
        sink.send_frame(&buf[..n + payload.len()]);
    }

    /// A fresh mask key in the client role (xorshift64*; masking needs unpredictability to proxies,
    /// not cryptographic strength, and the seed comes from the OS), none in the server role.
    fn next_mask(&mut self) -> Option<[u8; 4]> {
        if self.role == Role::Server {
            return None;
        }
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        Some(((v >> 32) as u32).to_ne_bytes())
    }

    fn transition(&mut self, to: State) {
        let ok = matches!(
            (self.state, to),
            (State::Open, State::Closing)
                | (State::Open, State::Closed)
                | (State::Closing, State::Closed)
        );
        assert!(ok, "connection state {:?} -> {:?}", self.state, to);
        self.state = to;
    }

    fn drop_buffers(&mut self) {
        self.frame = None;
        self.message = None;
        self.reassembly = Vec::new();
        self.control = Vec::new();
        self.inflater = None;
    }
}

/// Validates a Close payload (§5.5.1, §7.4): returns its code (1005 if empty) and reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<(u16, &str), ProtoError> {
    match payload.len() {
        0 => Ok((close_code::NO_STATUS, "")),
        1 => Err(ProtoError::CloseLengthOne),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code::is_valid_on_wire(code) {
                return Err(ProtoError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| ProtoError::InvalidUtf8)?;
            Ok((code, reason))
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
