//! The slab of connection slots.
//!
//! | phase        | entered when                                        | leaves to            |
//! |--------------|-----------------------------------------------------|----------------------|
//! | Handshaking  | accepted                                            | Open, Closing, Closed|
//! | Open         | the 101 was queued (WebSocket OPEN or CLOSING)      | Closing, Closed      |
//! | Closing      | TCP is being ended: flush, shutdown(WR), await EOF  | Closed               |
//! | Closed       | the Close of the direct descriptor was submitted    | (freed)              |
//!
//! A slot is freed only when Closed and no operation on it is in flight; every `user_data`
//! carries the slot's generation, so a completion for an older occupant is ignored.

use slab::Slab;

use super::buffers::SendQueue;
use super::ring::{GENERATION_MASK, Key};
use super::tls::TlsConn;
use crate::proto::connection::Connection;
use crate::timer::TimerId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Handshaking,
    Open,
    Closing,
    Closed,
}

/// What the connection's one timer is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// The upgrade request must be complete by then.
    Handshake,
    /// Nothing received for `ping_interval_ms`: send a ping (re-armed lazily from `last_recv_ms`).
    Idle,
    /// A heartbeat ping went out: something must arrive by then.
    Pong,
    /// Our Close went out (or TCP is being ended): past this, TCP is closed.
    Close,
}

/// Per-connection flags.
pub mod flag {
    /// The multishot receive is armed.
    pub const RECV_ARMED: u32 = 1 << 0;
    /// The receive must be re-armed at the end of the turn (it stopped with ENOBUFS or no MORE).
    pub const RECV_REARM: u32 = 1 << 1;
    /// The peer ended its side (EOF) or the socket broke: no more input.
    pub const PEER_DONE: u32 = 1 << 2;
    /// shutdown(SHUT_WR) was submitted.
    pub const SHUT_SENT: u32 = 1 << 3;
    /// The slot is in the dirty list (sends to start at the end of the turn).
    pub const DIRTY: u32 = 1 << 4;
    /// A heartbeat ping is unanswered.
    pub const AWAIT_PONG: u32 = 1 << 5;
    /// Call `on_drain` when the send queue empties.
    pub const WANT_DRAIN: u32 = 1 << 6;
    /// Our Close frame is queued: no more data frames.
    pub const CLOSE_SENT: u32 = 1 << 7;
    /// The handler accepted the connection (so `on_close` is owed).
    pub const OPENED: u32 = 1 << 8;
    /// `on_close` was called.
    pub const REPORTED: u32 = 1 << 9;
    /// The send queue overflowed (close policy): data sends are dropped until the end.
    pub const OVERFLOW: u32 = 1 << 10;
    /// The socket is broken: queued bytes are dropped, nothing more is sent.
    pub const SEND_DEAD: u32 = 1 << 11;
    /// A forced end (timeout, shutdown): shutdown(SHUT_RDWR) was submitted.
    pub const FORCED: u32 = 1 << 12;
    /// The shutdown(SHUT_WR) completed.
    pub const SHUT_DONE: u32 = 1 << 13;
    /// Reading is paused (queued output past the high mark): the receive is not re-armed, and
    /// a cancelled one is no end of input (`budget.rs`).
    pub const RECV_PAUSED: u32 = 1 << 14;
    /// Reading is paused for the memory budget (the worker's list has the slot, `budget.rs`).
    pub const BUDGET_HOLD: u32 = 1 << 15;
    /// While reading is paused, a poll for the peer's hang-up is armed (`Op::WatchHangup`), so
    /// that a peer that leaves is seen although nothing is read from it (`budget.rs`).
    pub const WATCH_HUP: u32 = 1 << 16;
    /// That poll's cancel was submitted.
    pub const WATCH_CANCEL: u32 = 1 << 17;
    /// The poll saw the peer's FIN while reading was paused: read on to the end of its input,
    /// with no more pauses (what is left is bounded by the socket's receive buffer).
    pub const PEER_FIN: u32 = 1 << 18;
}

/// Everything about a connection besides its protocol core.
pub struct ConnState {
    pub generation: u32,
    /// Index in the fixed-file table.
    pub fd: u32,
    pub phase: Phase,
    pub timer_kind: TimerKind,
    pub flags: u32,
    /// Operations in flight on this slot (recv counts once while armed).
    pub ops: u16,
    /// The close code to report (1006 until a Close frame says otherwise).
    pub close_code: u16,
    /// permessage-deflate: the window (8–15) our compressed frames may use; 0 if not agreed.
    pub deflate_bits: u8,
    /// Bytes this slot has accounted against the memory budget (`budget.rs`), as of when it was
    /// last settled.
    pub held_bytes: u32,
    pub timer: Option<TimerId>,
    pub last_recv_ms: u64,
    pub close_reason: Option<Box<str>>,
    /// Borrowed from the worker's pool only while something is queued or in flight.
    pub send: Option<Box<SendQueue>>,
    /// Bytes of an unfinished handshake, only while one is unfinished.
    pub spill: Option<Box<Vec<u8>>>,
    /// Topics this connection is subscribed to, only if any.
    pub topics: Option<Box<Vec<Box<str>>>>,
    /// The transport: `None` for plain `ws://`, the TLS state for `wss://` (8 bytes either way).
    pub tls: Option<Box<TlsConn>>,
}

impl ConnState {
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    pub fn set(&mut self, f: u32) {
        self.flags |= f;
    }

    pub fn clear(&mut self, f: u32) {
        self.flags &= !f;
    }

    /// Moves to `to`, asserting the transition is one of the table's.
    pub fn set_phase(&mut self, to: Phase) {
        use Phase::*;
        let ok = matches!(
            (self.phase, to),
            (Handshaking, Open | Closing | Closed) | (Open, Closing | Closed) | (Closing, Closed)
        );
        assert!(ok, "bad slot transition {:?} -> {to:?}", self.phase);
        self.phase = to;
    }

    /// Bytes queued or in flight.
    pub fn queued_bytes(&self) -> usize {
        self.send.as_ref().map_or(0, |q| q.bytes())
    }
}

/// A slot: the protocol core and the runtime state.
pub struct Slot {
    pub core: Connection,
    pub st: ConnState,
}

/// The slab, with a generation counter.
pub struct Slots {
    slab: Slab<Slot>,
    next_generation: u32,
}

impl Slots {
    pub fn new() -> Slots {
        Slots {
            slab: Slab::new(),
            next_generation: 1,
        }
    }

    /// Takes a slot for a freshly accepted descriptor.
    pub fn insert(&mut self, fd: u32, core: Connection, now_ms: u64) -> Key {
        let generation = self.next_generation;
        self.next_generation = (self.next_generation + 1) & GENERATION_MASK;
        let st = ConnState {
            generation,
            fd,
            phase: Phase::Handshaking,
            timer_kind: TimerKind::Handshake,
            flags: 0,
            ops: 0,
            close_code: crate::proto::error::close_code::ABNORMAL,
            deflate_bits: 0,
            held_bytes: 0,
            timer: None,
            last_recv_ms: now_ms,
            close_reason: None,
            send: None,
            spill: None,
            topics: None,
            tls: None,
        };
        let index = self.slab.insert(Slot { core, st });
        assert!(index < 1 << 24, "slot index beyond the 24 bits of a ConnId");
        Key {
            index: index as u32,
            generation,
        }
    }

    /// The slot named by `key`, if it still holds that occupant.
    pub fn get(&mut self, key: Key) -> Option<&mut Slot> {
        self.slab
            .get_mut(key.index as usize)
            .filter(|s| s.st.generation == key.generation)
    }

    /// Frees a slot: only when Closed with nothing in flight and nothing borrowed.
    pub fn remove(&mut self, key: Key) -> Slot {
        let s = self.get(key).expect("freeing a slot that is not there");
        assert_eq!(
            s.st.phase,
            Phase::Closed,
            "freeing a slot that is not Closed"
        );
        assert_eq!(s.st.ops, 0, "freeing a slot with operations in flight");
        assert!(s.st.timer.is_none(), "freeing a slot with a timer armed");
        self.slab.remove(key.index as usize)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Keys of every slot (for shutdown and broadcast).
    pub fn keys(&self, out: &mut Vec<Key>) {
        out.clear();
        out.extend(self.slab.iter().map(|(i, s)| Key {
            index: i as u32,
            generation: s.st.generation,
        }));
    }
}

impl Default for Slots {
    fn default() -> Self {
        Slots::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::connection::{Limits, Role};

    fn core() -> Connection {
        Connection::new(Role::Server, Limits::default(), 0)
    }

    #[test]
    fn stale_keys_miss_and_transitions_are_checked() {
        let mut slots = Slots::new();
        let a = slots.insert(4, core(), 0);
        slots.get(a).unwrap().st.set_phase(Phase::Open);
        slots.get(a).unwrap().st.set_phase(Phase::Closing);
        slots.get(a).unwrap().st.set_phase(Phase::Closed);
        slots.remove(a);
        let b = slots.insert(5, core(), 0);
        assert_eq!(a.index, b.index, "the slot is reused");
        assert!(
            slots.get(a).is_none(),
            "the old generation no longer matches"
        );
        assert!(slots.get(b).is_some());
    }

    #[test]
    #[should_panic(expected = "bad slot transition")]
    fn closed_cannot_reopen() {
        let mut slots = Slots::new();
        let a = slots.insert(4, core(), 0);
        slots.get(a).unwrap().st.set_phase(Phase::Closed);
        slots.get(a).unwrap().st.set_phase(Phase::Open);
    }

    #[test]
    #[should_panic(expected = "operations in flight")]
    fn busy_slot_is_not_freed() {
        let mut slots = Slots::new();
        let a = slots.insert(4, core(), 0);
        let s = slots.get(a).unwrap();
        s.st.set_phase(Phase::Closed);
        s.st.ops = 1;
        slots.remove(a);
    }
}

#[cfg(test)]
mod size {
    /// The per-connection user-space footprint of an idle OPEN connection is this slot (plus its
    /// share of the slab's spare capacity); keep it small.
    #[test]
    fn slot_stays_small() {
        let slot = size_of::<super::Slot>();
        assert!(slot <= 256, "Slot is {slot} bytes");
        assert!(size_of::<super::ConnState>() <= 96);
    }
}
