//! A hashed timer wheel: fixed capacity, O(1) insert and cancel, time passed in.
//!
//! Sans-IO: the wheel never reads a clock; every call that needs the time takes `now_ms`.
//!
//! # Layout
//!
//! Timers live in one array allocated by [`TimerWheel::new`] (32 bytes each) and are threaded on
//! intrusive doubly linked lists of `u32` indices: one list per wheel slot, one list of overdue
//! timers, and a free list. A timer due at tick `t` sits in slot `t & (slots - 1)`; a timer more
//! than one rotation away stays in its slot and is skipped (its due tick is checked) each time the
//! slot comes around. So `advance` costs O(slots visited + timers in those slots), and never more
//! than one full rotation, however far time jumps. A bitmap of non-empty slots makes
//! [`TimerWheel::next_deadline_ms`] a scan of `slots / 64` words at worst.
//!
//! # Firing contract
//!
//! Let `now` be the latest time the wheel has seen (the `now_ms` given to `new` or to the latest
//! `advance`; time never goes backwards: an older `now_ms` counts as the latest one). A timer
//! inserted with `deadline_ms`
//! - fires in the next `advance` call, whatever its `now_ms`, if `deadline_ms <= now` at insert;
//! - otherwise fires in the first `advance(now_ms)` with `now_ms >= round_up(deadline_ms)`, where
//!   `round_up` rounds up to a multiple of `tick_ms`.
//!
//! So a timer never fires before its deadline and at most `tick_ms - 1` ms after it. Each timer
//! fires exactly once unless cancelled first. Order within one `advance` is unspecified.
//! [`reference::Model`] states the same contract as plain code.
#![forbid(unsafe_code)]

use std::fmt;

/// End of a list.
const NIL: u32 = u32::MAX;
/// `Entry::list` of an entry on the free list.
const LIST_FREE: u32 = u32::MAX;

/// Names one inserted timer. Stale once the timer fired or was cancelled: the entry's generation
/// moved on, so a stale id matches nothing (until the `u32` generation wraps, after 2^32 reuses of
/// the same entry). An id is only meaningful to the wheel that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// Every entry of the wheel is in use.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timer wheel is full")
    }
}

impl std::error::Error for Full {}

/// One timer, or one free entry.
#[derive(Clone)]
struct Entry {
    /// The tick at which it fires (unused on the overdue list).
    due_tick: u64,
    token: u64,
    /// Bumped each time the entry is freed, so old `TimerId`s stop matching.
    generation: u32,
    /// The list it is on: a slot index, the overdue list (`slots`), or `LIST_FREE`.
    list: u32,
    prev: u32,
    next: u32,
}

const _: () = assert!(size_of::<Entry>() <= 32);

/// A hashed timer wheel. See the module docs for the firing contract.
#[derive(Clone)]
pub struct TimerWheel {
    entries: Box<[Entry]>,
    /// Head of each slot's list, then (at index `slots`) the head of the overdue list.
    heads: Box<[u32]>,
    /// One bit per slot: its list is non-empty.
    occupied: Box<[u64]>,
    free_head: u32,
    len: usize,
    tick_ms: u64,
    slot_mask: u64,
    /// The latest tick processed: `now_ms / tick_ms`.
    done_tick: u64,
    /// The latest time seen.
    now_ms: u64,
}

impl fmt::Debug for TimerWheel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len)
            .field("capacity", &self.entries.len())
            .field("tick_ms", &self.tick_ms)
            .field("slots", &self.slot_count())
            .field("now_ms", &self.now_ms)
            .finish()
    }
}

impl TimerWheel {
    /// A wheel holding at most `capacity` timers, with `slots` slots of `tick_ms` each.
    ///
    /// Panics if `tick_ms` is 0, `slots` is not a power of two (or is above 2^31), or `capacity`
    /// does not fit in a `u32` index.
    pub fn new(capacity: usize, tick_ms: u64, slots: usize, now_ms: u64) -> Self {
        assert!(tick_ms > 0, "tick_ms must be > 0");
        assert!(
            slots.is_power_of_two() && slots <= 1 << 31,
            "slots must be a power of two"
        );
        assert!(capacity < NIL as usize, "capacity must fit a u32 index");
        let entries = (0..capacity).map(|i| Entry {
            due_tick: 0,
            token: 0,
            generation: 0,
            list: LIST_FREE,
            prev: NIL,
            next: if i + 1 < capacity { i as u32 + 1 } else { NIL },
        });
        TimerWheel {
            entries: entries.collect(),
            heads: vec![NIL; slots + 1].into_boxed_slice(),
            occupied: vec![0; slots.div_ceil(64)].into_boxed_slice(),
            free_head: if capacity > 0 { 0 } else { NIL },
            len: 0,
            tick_ms,
            slot_mask: slots as u64 - 1,
            done_tick: now_ms / tick_ms,
            now_ms,
        }
    }

    /// Adds a timer that fires once `deadline_ms` has passed (see the firing contract).
    pub fn insert(&mut self, deadline_ms: u64, token: u64) -> Result<TimerId, Full> {
        let index = self.free_head;
        if index == NIL {
            return Err(Full);
        }
        let list = if deadline_ms <= self.now_ms {
            self.overdue_list()
        } else {
            let due_tick = deadline_ms.div_ceil(self.tick_ms);
            debug_assert!(due_tick > self.done_tick);
            self.entries[index as usize].due_tick = due_tick;
            self.slot_of(due_tick)
        };
        let entry = &mut self.entries[index as usize];
        self.free_head = entry.next;
        entry.token = token;
        let generation = entry.generation;
        self.link(index, list);
        self.len += 1;
        Ok(TimerId { index, generation })
    }

    /// Removes a pending timer. False (and nothing changes) if it already fired, was cancelled, or
    /// `id` is stale.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let Some(entry) = self.entries.get(id.index as usize) else {
            return false;
        };
        if entry.generation != id.generation || entry.list == LIST_FREE {
            return false;
        }
        self.unlink(id.index);
        self.release(id.index);
        true
    }

    /// Moves time to `now_ms` and calls `fired` once for every timer now due, with its id and
    /// token. The timers are gone from the wheel by the time `fired` sees them; `fired` cannot
    /// reach the wheel (it is borrowed), so collect and re-insert after. A jump of any length costs
    /// at most one rotation of slot visits.
    pub fn advance(&mut self, now_ms: u64, fired: &mut impl FnMut(TimerId, u64)) {
        let now_ms = now_ms.max(self.now_ms);
        self.now_ms = now_ms;
        self.fire_overdue(fired);
        let last_tick = now_ms / self.tick_ms;
        // Past one rotation every slot has been visited once: the due check covers the rest.
        let visits = (last_tick - self.done_tick).min(self.slot_count() as u64);
        for step in 1..=visits {
            let slot = self.slot_of(self.done_tick + step);
            self.fire_slot(slot, last_tick, fired);
        }
        self.done_tick = last_tick;
    }

    /// A lower bound on when the earliest pending timer fires: `None` if there is none, the latest
    /// `now_ms` if one is overdue, else the start of the first tick whose slot holds a timer.
    ///
    /// It is never later than the earliest firing time (`round_up(deadline_ms)`), so a loop may
    /// sleep until it; and it is a tick at which `advance` makes progress, so the loop never spins.
    /// It is exact when every pending timer is within one rotation (`slots * tick_ms`); a timer
    /// further out can cost one early wake-up per rotation. Cost: a scan of `slots / 64` words at
    /// worst, from the current slot.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        if self.heads[self.overdue_list() as usize] != NIL {
            return Some(self.now_ms);
        }
        let from = self.slot_of(self.done_tick + 1);
        let slot = self.first_occupied_from(from)?;
        let distance = u64::from(slot.wrapping_sub(from)) & self.slot_mask;
        Some((self.done_tick + 1 + distance).saturating_mul(self.tick_ms))
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot_count(&self) -> usize {
        self.heads.len() - 1
    }

    fn overdue_list(&self) -> u32 {
        self.slot_count() as u32
    }

    fn slot_of(&self, tick: u64) -> u32 {
        (tick & self.slot_mask) as u32
    }

    /// Fires every timer on the overdue list.
    fn fire_overdue(&mut self, fired: &mut impl FnMut(TimerId, u64)) {
        let overdue = self.overdue_list() as usize;
        while self.heads[overdue] != NIL {
            self.fire(self.heads[overdue], fired);
        }
    }

    /// Fires the timers of `slot` due at or before `last_tick`; skips later rotations.
    fn fire_slot(&mut self, slot: u32, last_tick: u64, fired: &mut impl FnMut(TimerId, u64)) {
        let mut index = self.heads[slot as usize];
        while index != NIL {
            let entry = &self.entries[index as usize];
            let next = entry.next;
            if entry.due_tick <= last_tick {
                self.fire(index, fired);
            }
            index = next;
        }
    }

    fn fire(&mut self, index: u32, fired: &mut impl FnMut(TimerId, u64)) {
        let token = self.entries[index as usize].token;
        self.unlink(index);
        let id = self.release(index);
        fired(id, token);
    }

    /// Pushes entry `index` on the front of `list`.
    fn link(&mut self, index: u32, list: u32) {
        let head = self.heads[list as usize];
        let entry = &mut self.entries[index as usize];
        entry.list = list;
        entry.prev = NIL;
        entry.next = head;
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        self.heads[list as usize] = index;
        if list < self.overdue_list() {
            self.occupied[list as usize / 64] |= 1 << (list % 64);
        }
    }

    /// Takes entry `index` off its list.
    fn unlink(&mut self, index: u32) {
        let Entry {
            list, prev, next, ..
        } = self.entries[index as usize];
        debug_assert_ne!(list, LIST_FREE);
        if prev == NIL {
            self.heads[list as usize] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        if self.heads[list as usize] == NIL && list < self.overdue_list() {
            self.occupied[list as usize / 64] &= !(1 << (list % 64));
        }
    }

    /// Puts an unlinked entry on the free list; returns the id it had.
    fn release(&mut self, index: u32) -> TimerId {
        let entry = &mut self.entries[index as usize];
        let id = TimerId {
            index,
            generation: entry.generation,
        };
        entry.generation = entry.generation.wrapping_add(1);
        entry.list = LIST_FREE;
        entry.prev = NIL;
        entry.next = self.free_head;
        self.free_head = index;
        self.len -= 1;
        id
    }

    /// The first non-empty slot at or after `from`, wrapping around.
    fn first_occupied_from(&self, from: u32) -> Option<u32> {
        let words = self.occupied.len();
        let first = from as usize / 64;
        let here = self.occupied[first] & (!0u64 << (from % 64));
        if here != 0 {
            return Some((first * 64) as u32 + here.trailing_zeros());
        }
        // Wrapping back to `first` sees only bits below `from`: the rest were zero just now.
        (1..=words)
            .map(|k| (first + k) % words)
            .find(|&w| self.occupied[w] != 0)
            .map(|w| (w * 64) as u32 + self.occupied[w].trailing_zeros())
    }
}

/// The firing contract as plain code, and a harness checking the wheel against it (shared by the
/// property tests and the fuzz target). Not part of the API.
#[doc(hidden)]
pub mod reference {
    use super::{Full, TimerId, TimerWheel};
    use std::collections::BTreeMap;

    /// Pending timers by token, each with the time at which it must fire.
    #[derive(Debug)]
    pub struct Model {
        capacity: usize,
        tick_ms: u64,
        now_ms: u64,
        pending: BTreeMap<u64, u128>,
    }

    impl Model {
        pub fn new(capacity: usize, tick_ms: u64, now_ms: u64) -> Self {
            Model {
                capacity,
                tick_ms,
                now_ms,
                pending: BTreeMap::new(),
            }
        }

        /// The earliest `now_ms` of an `advance` that fires a timer inserted now with
        /// `deadline_ms`. A past deadline fires on the next advance, whose time is at least
        /// `self.now_ms`. Computed in u128: rounding up may pass `u64::MAX` (then it never fires).
        pub fn fire_at_ms(&self, deadline_ms: u64) -> u128 {
            if deadline_ms <= self.now_ms {
                return u128::from(self.now_ms);
            }
            let tick_ms = u128::from(self.tick_ms);
            u128::from(deadline_ms).div_ceil(tick_ms) * tick_ms
        }

        /// Tokens must be unique.
        pub fn insert(&mut self, deadline_ms: u64, token: u64) -> Result<(), Full> {
            if self.pending.len() == self.capacity {
                return Err(Full);
            }
            let fire_at_ms = self.fire_at_ms(deadline_ms);
            assert!(
                self.pending.insert(token, fire_at_ms).is_none(),
                "token reused"
            );
            Ok(())
        }

        pub fn cancel(&mut self, token: u64) -> bool {
            self.pending.remove(&token).is_some()
        }

        /// The tokens that fire, in order.
        pub fn advance(&mut self, now_ms: u64) -> Vec<u64> {
            self.now_ms = self.now_ms.max(now_ms);
            let now_ms = u128::from(self.now_ms);
            let fired: Vec<u64> = self
                .pending
                .iter()
                .filter(|&(_, &at)| at <= now_ms)
                .map(|(&t, _)| t)
                .collect();
            for token in &fired {
                self.pending.remove(token);
            }
            fired
        }

        pub fn next_fire_ms(&self) -> Option<u128> {
            self.pending.values().min().copied()
        }

        pub fn now_ms(&self) -> u64 {
            self.now_ms
        }

        pub fn len(&self) -> usize {
            self.pending.len()
        }

        pub fn is_empty(&self) -> bool {
            self.pending.is_empty()
        }
    }

    /// One step of a test run.
    #[derive(Clone, Copy, Debug)]
    pub enum Op {
        /// Insert at `now + offset_ms` (saturating; a negative offset is a past deadline).
        Insert { offset_ms: i64 },
        /// Cancel the id of insert number `pick % inserts` (it may have fired or been cancelled).
        Cancel { pick: usize },
        /// Advance time by `step_ms`.
        Advance { step_ms: u64 },
        /// Advance to exactly `next_deadline_ms()`, the boundary where off-by-ones show.
        AdvanceToNext,
    }

    /// A wheel and a model driven in lockstep; every step asserts they agree.
    #[derive(Debug)]
    pub struct Harness {
        pub wheel: TimerWheel,
        pub model: Model,
        /// The id of each insert, indexed by its token.
        ids: Vec<Option<TimerId>>,
        slots: u128,
    }

    impl Harness {
        pub fn new(capacity: usize, tick_ms: u64, slots: usize, now_ms: u64) -> Self {
            Harness {
                wheel: TimerWheel::new(capacity, tick_ms, slots, now_ms),
                model: Model::new(capacity, tick_ms, now_ms),
                ids: Vec::new(),
                slots: slots as u128,
            }
        }

        pub fn apply(&mut self, op: Op) {
            match op {
                Op::Insert { offset_ms } => self.insert(offset_ms),
                Op::Cancel { pick } => self.cancel(pick),
                Op::Advance { step_ms } => {
                    self.advance(self.model.now_ms().saturating_add(step_ms))
                }
                Op::AdvanceToNext => {
                    if let Some(next_ms) = self.wheel.next_deadline_ms() {
                        self.advance(next_ms);
                    }
                }
            }
            self.check_state();
        }

        /// Advances past every pending timer; all must fire.
        pub fn finish(&mut self) {
            if let Some(last_ms) = self.model.pending.values().max() {
                self.advance(u64::try_from(*last_ms).unwrap_or(u64::MAX));
            }
            self.check_state();
            assert!(self.model.is_empty(), "timers left after the last deadline");
        }

        fn insert(&mut self, offset_ms: i64) {
            let deadline_ms = self.model.now_ms().saturating_add_signed(offset_ms);
            let token = self.ids.len() as u64;
            let got = self.wheel.insert(deadline_ms, token);
            let want = self.model.insert(deadline_ms, token);
            assert_eq!(
                got.as_ref().err(),
                want.as_ref().err(),
                "insert {deadline_ms}"
            );
            self.ids.push(got.ok());
        }

        fn cancel(&mut self, pick: usize) {
            if self.ids.is_empty() {
                return;
            }
            let token = pick % self.ids.len();
            let Some(id) = self.ids[token] else { return };
            let got = self.wheel.cancel(id);
            let want = self.model.cancel(token as u64);
            assert_eq!(got, want, "cancel of token {token}");
        }

        fn advance(&mut self, now_ms: u64) {
            let mut fired = Vec::new();
            self.wheel
                .advance(now_ms, &mut |id, token| fired.push((token, id)));
            fired.sort_by_key(|&(token, _)| token);
            for &(token, id) in &fired {
                assert_eq!(
                    self.ids.get(token as usize),
                    Some(&Some(id)),
                    "id of token {token}"
                );
            }
            let fired: Vec<u64> = fired.into_iter().map(|(token, _)| token).collect();
            assert_eq!(fired, self.model.advance(now_ms), "fired at {now_ms}");
        }

        /// `len` agrees; `next_deadline_ms` is a lower bound that never makes a loop spin.
        fn check_state(&self) {
            assert_eq!(self.wheel.len(), self.model.len());
            assert_eq!(self.wheel.is_empty(), self.model.is_empty());
            let next_ms = self.wheel.next_deadline_ms();
            assert_eq!(next_ms.is_none(), self.model.is_empty());
            if let (Some(next_ms), Some(fire_ms)) = (next_ms, self.model.next_fire_ms()) {
                self.check_next_deadline(next_ms, fire_ms);
            }
        }

        /// `next_ms` from the wheel against `fire_ms`, the model's earliest firing.
        fn check_next_deadline(&self, next_ms: u64, fire_ms: u128) {
            let now_ms = self.model.now_ms();
            let (next, now, fire) = (u128::from(next_ms), u128::from(now_ms), fire_ms);
            assert!(next <= fire, "late: next {next}, earliest firing {fire}");
            assert!(next >= now, "in the past: next {next}, now {now}");
            let overdue = fire <= now;
            assert_eq!(
                next == now,
                overdue,
                "spin or skip: next {next} now {now} firing {fire}"
            );
            if self.all_within_one_rotation() {
                assert_eq!(next, fire, "not exact within a rotation (now {now})");
            }
        }

        /// Every pending timer fires within the coming rotation: no slot holds a later one, so
        /// the first occupied slot is exactly the earliest firing.
        fn all_within_one_rotation(&self) -> bool {
            let tick_ms = u128::from(self.model.tick_ms);
            let rotation_end_ms = (u128::from(self.model.now_ms) / tick_ms + self.slots) * tick_ms;
            self.model.pending.values().all(|&at| at <= rotation_end_ms)
        }
    }

    /// Runs ops decoded from arbitrary bytes (the fuzz target's whole body).
    ///
    /// Bytes 0..4 choose the wheel (tick 1..=64 ms, 1..=512 slots, capacity 0..=63, start time
    /// `0..2^48` ms);
    /// then each 3 bytes are one op: a kind byte and a 16-bit argument.
    pub fn run_bytes(data: &[u8]) {
        let Some((head, ops)) = data.split_first_chunk::<4>() else {
            return;
        };
        let tick_ms = u64::from(head[0] % 64) + 1;
        let slots = 1usize << (head[1] % 10);
        let capacity = usize::from(head[2] % 64);
        let now_ms = u64::from(head[3]) << 40;
        let mut harness = Harness::new(capacity, tick_ms, slots, now_ms);
        for chunk in ops.chunks_exact(3) {
            harness.apply(decode_op(
                chunk[0],
                u16::from_le_bytes([chunk[1], chunk[2]]),
            ));
        }
        harness.finish();
    }

    fn decode_op(kind: u8, arg: u16) -> Op {
        let arg = u64::from(arg);
        match kind % 8 {
            0..=2 => Op::Insert {
                offset_ms: (arg % 11_000) as i64 - 1_000,
            },
            3 => Op::Cancel { pick: arg as usize },
            4 | 5 => Op::Advance {
                step_ms: arg % 3_000,
            },
            6 => Op::AdvanceToNext,
            _ => Op::Advance {
                step_ms: arg * 60_000,
            },
        }
    }
}
