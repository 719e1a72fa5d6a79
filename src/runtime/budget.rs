//! What a worker does so that no peer can make the server hold unbounded memory: it reads less.
//!
//! When a connection's queued output passes `send_queue_high_bytes`, the worker stops reading
//! from it: its multishot receive is cancelled (`Op::CancelRecv`), and not re-armed while paused.
//! The kernel's receive buffer then fills, TCP's window closes, and the peer's sends block: the
//! server buffers nothing more for it. Once the queue is below `send_queue_low_bytes`, the
//! receive is armed again. Completions already on their way when the cancel goes out are still
//! parsed (at most a few receive buffers), so the queue passes the high mark by at most a few
//! messages' worth of what the handler sends for them.
//!
//! The hook is one call per settled slot (`Memory::pace`); the decision is a pure function of
//! the slot's state (`reads`), tested on its own.
//!
//! **The memory budget.** One [`MemoryBudget`] per server counts the bytes the engine buffers:
//! every connection's send queue (its own copied bytes, by capacity), reassembly and handshake
//! spill (`ConnState::held_bytes`, updated when the slot is settled), each worker's pools
//! (reassembly and inflate-output buffers kept for reuse, the compressor's output), and every
//! shared frame once, from its encoding until its last reference drops (`counted`). Workers
//! add their changes to one atomic once per loop turn, not per byte. Past half of the budget,
//! reading pauses on every connection the worker settles that holds more than one receive
//! buffer (`recv_buffer_bytes`; so no large new input is buffered, while clients that read their
//! answers are still served); once the use falls below 3/8 of the budget they are read again,
//! and below 1/2 too once it has stayed there for `memory_budget_grace_ms` (they may be what
//! keeps it between the marks). Held connections with the use past 3/8 for eight graces are a
//! stall: the largest held ones are closed with 1013, for the worker's share of the excess over
//! 3/8, and again each grace while it lasts.
//! If it stays past 3/4 for `memory_budget_grace_ms`, or at once when it is past the budget
//! itself, each worker closes its connections that hold the most, largest first, with 1013
//! (try again later), until it has freed its share of the excess over 3/8. The last quarter is
//! for what is on its way and what is not counted (the allocator's slack, the program).
//! The fixed buffers (receive ring, registered send buffers) count too.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use bytes::Bytes;

use super::ring::{Key, Op};
use super::slots::{ConnState, Phase, flag};
use crate::config::Config;
use crate::metrics::{WorkerMetrics, add, dec};

/// What to do with a connection's receive at the end of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reads {
    /// Leave it as it is.
    Keep,
    /// Stop reading: cancel the armed receive, do not re-arm.
    Pause,
    /// Read again: re-arm the receive if it is not armed.
    Resume,
}

/// The high- and low-water marks of a connection's queued output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marks {
    pub high_bytes: usize,
    pub low_bytes: usize,
}

impl Marks {
    pub(crate) fn from_config(cfg: &Config) -> Marks {
        Marks {
            high_bytes: cfg.send_queue_high_bytes,
            low_bytes: cfg.send_queue_low_bytes,
        }
    }
}

/// The decision for one connection with `queued` bytes of output. Only an Open connection whose
/// peer may still send is paused (past the high mark, or held for the memory budget); any other
/// is read (a Closing connection reads to EOF).
pub(crate) fn reads(phase: Phase, flags: u32, queued: usize, marks: Marks) -> Reads {
    let paused = flags & flag::RECV_PAUSED != 0;
    let readable = phase == Phase::Open && flags & (flag::PEER_DONE | flag::PEER_FIN) == 0;
    let budget = flags & flag::BUDGET_HOLD != 0;
    let want_paused =
        readable && (budget || queued > marks.high_bytes || (paused && queued >= marks.low_bytes));
    match (paused, want_paused) {
        (false, true) => Reads::Pause,
        (true, false) => Reads::Resume,
        _ => Reads::Keep,
    }
}

/// The process's (one server's) memory budget and what the workers have accounted against it.
pub struct MemoryBudget {
    budget_bytes: u64,
    used_bytes: AtomicI64,
    /// Connections closed with 1013 because the budget stayed exceeded.
    closes: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `budget_bytes`.
    pub fn new(budget_bytes: u64) -> MemoryBudget {
        MemoryBudget {
            budget_bytes,
            used_bytes: AtomicI64::new(0),
            closes: AtomicU64::new(0),
        }
    }

    /// The budget of `cfg`: `memory_budget_bytes`, or with 0 half of the machine's memory
    /// (`MemTotal` in /proc/meminfo, read once here; 1 GiB if it cannot be read).
    pub fn for_config(cfg: &Config) -> MemoryBudget {
        let auto = || mem_total_bytes().map_or(1 << 30, |total| total / 2);
        MemoryBudget::new(match cfg.memory_budget_bytes {
            0 => auto(),
            n => n,
        })
    }

    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Bytes accounted now (as of the workers' last loop turns).
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Relaxed).max(0) as u64
    }

    pub fn closes(&self) -> u64 {
        self.closes.load(Relaxed)
    }

    fn add(&self, delta: i64) {
        if delta != 0 {
            self.used_bytes.fetch_add(delta, Relaxed);
        }
    }
}

/// Reading pauses past this share of the budget (1/2)...
fn pause_mark(budget: u64) -> i64 {
    (budget / 2) as i64
}

/// ...and resumes below this one (3/8); the largest holders are closed if the use stays past
/// the shed mark, until it is back under this.
fn resume_mark(budget: u64) -> i64 {
    (budget / 8 * 3) as i64
}

/// Past this share (3/4) for the grace, the largest holders are closed. The last quarter is
/// for what the engine does not count: the allocator's slack and fragmentation, the program
/// and its libraries, and what is on its way when reading pauses; so that the process's RSS,
/// not only the count, stays within the budget.
fn shed_mark(budget: u64) -> i64 {
    (budget / 4 * 3) as i64
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The bytes of a shared frame, counted against the budget once, from now until the last
/// connection that holds it has sent it.
pub(crate) fn counted(bytes: Vec<u8>, budget: &Arc<MemoryBudget>) -> Bytes {
    let n = bytes.capacity() as i64;
    budget.add(n);
    Bytes::from_owner(Counted {
        bytes,
        budget: budget.clone(),
        n,
    })
}

struct Counted {
    bytes: Vec<u8>,
    budget: Arc<MemoryBudget>,
    n: i64,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.budget.add(-self.n);
    }
}

/// What the worker must do about the budget this turn.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Nothing.
    Calm,
    /// The use is back under the resume mark: read these connections again.
    Release(Vec<Key>),
    /// Still over the budget after the grace: close connections holding at least this many
    /// bytes in total, largest first.
    Shed(u64),
    /// Held connections stalled (nothing frees by itself): close held connections holding at
    /// least this many bytes in total, largest first.
    ShedHeld(u64),
}

/// One worker's memory bounds.
pub(crate) struct Memory {
    marks: Marks,
    metrics: Arc<WorkerMetrics>,
    budget: Arc<MemoryBudget>,
    grace_ms: u64,
    /// Over the budget, a connection holding at most this (one receive buffer) keeps reading.
    small_bytes: usize,
    /// The worker's receive ring and registered send buffers, allocated once.
    fixed_bytes: usize,
    /// Changes not yet added to the shared count (flushed once per turn).
    pending: i64,
    /// This worker's share of the use: its slots' `held_bytes` and its pools.
    local: i64,
    pools: i64,
    /// Connections paused for the budget (flag `BUDGET_HOLD`).
    held: Vec<Key>,
    /// How many of `held` are live connections still flagged `BUDGET_HOLD` (the list keeps the
    /// keys of those that ended until the next release).
    held_live: usize,
    /// Since when the use has been over the budget, and when connections were last shed.
    over_since_ms: Option<u64>,
    shed_at_ms: u64,
    /// The most this worker held since its memory was last given back, and when it is due to
    /// be given back again.
    peak: i64,
    trim_at_ms: Option<u64>,
    trimmed_ms: u64,
    /// The pending trim follows up an earlier one ([`Memory::trim_due`]).
    trim_follows_up: bool,
    /// Since when connections are held with the use below the pause mark (but above the resume
    /// mark): past the grace they are released all the same ([`Memory::turn`]).
    held_calm_since_ms: Option<u64>,
    /// Since when connections are held with the use above the resume mark ([`Memory::turn`]).
    stalled_since_ms: Option<u64>,
}

/// Held connections with the use above the resume mark for this many graces are a stall: they
/// read nothing, so their half-read messages cannot complete and nothing frees by itself. The
/// largest are then closed as if the budget were exceeded.
const STALL_GRACES: u64 = 8;

/// Past the budget itself, connections are shed at once, at most this often.
const URGENT_SHED_INTERVAL_MS: u64 = 20;

/// A worker whose use fell by this much since its peak gives its free memory back...
const TRIM_DROP_BYTES: i64 = 8 << 20;
/// ...this long after the fall was seen (a burst usually ends in several turns)...
const TRIM_DELAY_MS: u64 = 200;
/// ...and at most this often.
pub(crate) const TRIM_INTERVAL_MS: u64 = 1000;

impl Memory {
    pub(crate) fn new(
        cfg: &Config,
        metrics: Arc<WorkerMetrics>,
        budget: Arc<MemoryBudget>,
    ) -> Memory {
        Memory {
            marks: Marks::from_config(cfg),
            metrics,
            budget,
            grace_ms: cfg.memory_budget_grace_ms,
            small_bytes: cfg.recv_buffer_bytes as usize,
            fixed_bytes: usize::from(cfg.recv_buffers_per_worker) * cfg.recv_buffer_bytes as usize
                + usize::from(cfg.send_buffers_per_worker)
                    * (cfg.send_buffer_bytes as usize + crate::proto::frame::HEADER_BYTES_MAX),
            pending: 0,
            local: 0,
            pools: 0,
            held: Vec::new(),
            held_live: 0,
            over_since_ms: None,
            shed_at_ms: 0,
            peak: 0,
            trim_at_ms: None,
            trimmed_ms: 0,
            trim_follows_up: false,
            held_calm_since_ms: None,
            stalled_since_ms: None,
        }
    }

    fn used(&self) -> i64 {
        self.budget.used_bytes.load(Relaxed) + self.pending
    }

    /// Past the pause mark (half of the budget): new reads pause, so that what is already on
    /// its way (receives completed before the pause took effect) stays below the shed mark.
    fn over(&self) -> bool {
        self.used() > pause_mark(self.budget.budget_bytes)
    }

    /// Accounts a slot's buffered bytes (`held`: its queue, core and spill) once it is settled.
    fn account(&mut self, st: &mut ConnState, held: usize) {
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        let delta = i64::from(held) - i64::from(st.held_bytes);
        st.held_bytes = held;
        self.pending += delta;
        self.local += delta;
    }

    /// A slot leaves: whatever it still had accounted goes.
    pub(crate) fn forget(&mut self, st: &mut ConnState) {
        self.account(st, 0);
        if st.has(flag::BUDGET_HOLD) {
            st.clear(flag::BUDGET_HOLD);
            self.held_live = self.held_live.saturating_sub(1);
        }
    }

    /// Everyone held is read again (the worker clears their `BUDGET_HOLD`).
    fn release(&mut self) -> Turn {
        self.held_calm_since_ms = None;
        self.stalled_since_ms = None;
        self.held_live = 0;
        Turn::Release(std::mem::take(&mut self.held))
    }

    /// The worker's pools now hold `bytes` (besides its fixed buffers).
    pub(crate) fn pools(&mut self, bytes: usize) {
        let bytes = bytes + self.fixed_bytes;
        let delta = bytes as i64 - self.pools;
        self.pools = bytes as i64;
        self.pending += delta;
        self.local += delta;
    }

    /// Once per loop turn: publishes this turn's changes and says what the budget asks for.
    pub(crate) fn turn(&mut self, now_ms: u64) -> Turn {
        self.budget.add(std::mem::take(&mut self.pending));
        let used = self.used();
        let budget = shed_mark(self.budget.budget_bytes);
        if used <= budget {
            self.over_since_ms = None;
        } else if self.over_since_ms.is_none() {
            self.over_since_ms = Some(now_ms);
        }
        // Only keys of connections that ended: dropped (releasing them is a no-op).
        let stale_only = self.held_live == 0 && !self.held.is_empty();
        if stale_only || (used < resume_mark(self.budget.budget_bytes) && !self.held.is_empty()) {
            return self.release();
        }
        // Held connections may be what keeps the use between the marks: their half-read
        // messages complete only if they read. Below the pause mark for the grace, they are
        // released; if they take the use past the marks again, they are held again, and past
        // the shed mark the largest are closed. (Waiting for the resume mark alone left them
        // paused for ever: a CI run ended with 13 connections holding 107 MiB of a 256 MiB
        // budget, the resume mark 96 MiB.)
        if self.held_live == 0 || used > pause_mark(self.budget.budget_bytes) {
            self.held_calm_since_ms = None;
        } else {
            let since = *self.held_calm_since_ms.get_or_insert(now_ms);
            if now_ms >= since + self.grace_ms {
                return self.release();
            }
        }
        if self.held_live == 0 || used < resume_mark(self.budget.budget_bytes) {
            self.stalled_since_ms = None;
        } else {
            self.stalled_since_ms.get_or_insert(now_ms);
        }
        let shed_rested = now_ms >= self.shed_at_ms + self.grace_ms;
        let stalled = shed_rested
            && self
                .stalled_since_ms
                .is_some_and(|since| now_ms >= since + STALL_GRACES * self.grace_ms);
        // Past the budget itself (so past the shed mark: `over_since_ms` is set) there is no
        // grace: what is on its way would take the process past it (only a few turns, for the
        // last sheds' frees to be counted).
        let urgent = used > self.budget.budget_bytes as i64
            && now_ms >= self.shed_at_ms + URGENT_SHED_INTERVAL_MS;
        let graced = shed_rested
            && self
                .over_since_ms
                .is_some_and(|since| now_ms >= since + self.grace_ms);
        if !urgent && !graced && !stalled {
            return Turn::Calm;
        }
        self.shed_at_ms = now_ms;
        // This worker's share of what must go to get back under the resume mark.
        let excess = used - resume_mark(self.budget.budget_bytes);
        let share = excess as i128 * i128::from(self.local.max(0)) / i128::from(used.max(1));
        let share = share.max(1) as u64;
        if urgent || graced {
            Turn::Shed(share)
        } else {
            // Below the shed mark: only those held, whose stall this is.
            Turn::ShedHeld(share)
        }
    }

    /// Whether the worker should give its free memory back now (pools shrunk, then the
    /// allocator trimmed: `sys::release_free_memory`). After a burst the use falls, and glibc
    /// keeps what was freed (its heaps are fragmented, and after large frees its mmap threshold
    /// has grown so that later large buffers come from the heap too): trimming once the fall is
    /// seen is what brings RSS back (docs/ARCHITECTURE.md, memory that returns).
    pub(crate) fn trim_due(&mut self, now_ms: u64) -> bool {
        self.peak = self.peak.max(self.local);
        if self.trim_at_ms.is_none() && self.peak - self.local >= TRIM_DROP_BYTES {
            let at = (now_ms + TRIM_DELAY_MS).max(self.trimmed_ms + TRIM_INTERVAL_MS);
            self.trim_at_ms = Some(at);
        }
        match self.trim_at_ms {
            Some(at) if now_ms >= at => {
                // A trim after a fall is followed by one more, an interval later: what was
                // accounted gone before it may be freed after it (a slot is freed once its last
                // operation completes), and would otherwise wait for the next fall (a CI run
                // kept 51 MiB RSS against 24 steady that way).
                let follow_up = !std::mem::take(&mut self.trim_follows_up);
                self.trim_at_ms = follow_up.then_some(now_ms + TRIM_INTERVAL_MS);
                self.trim_follows_up = follow_up;
                self.peak = self.local;
                self.trimmed_ms = now_ms;
                true
            }
            _ => false,
        }
    }

    /// When the loop must wake for a trim (it may be idle by then).
    pub(crate) fn deadline_ms(&self) -> Option<u64> {
        let release = self.held_calm_since_ms.map(|since| since + self.grace_ms);
        let stall = self.stalled_since_ms.map(|since| {
            (since + STALL_GRACES * self.grace_ms).max(self.shed_at_ms + self.grace_ms)
        });
        [self.trim_at_ms, release, stall]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether a connection holding `bytes` holds more than one receive buffer: only such a
    /// one is paused or shed for the budget.
    pub(crate) fn holds_much(&self, bytes: u64) -> bool {
        bytes > self.small_bytes as u64
    }

    /// Counts a connection closed for the budget.
    pub(crate) fn shed_one(&self) {
        self.budget.closes.fetch_add(1, Relaxed);
    }

    /// Called once per settled slot, before its receive is re-armed: accounts what it holds
    /// (`held` bytes besides its queue), pauses or resumes its reads. Returns the cancel to
    /// submit when an armed receive must stop. Over the budget, only connections that hold more
    /// than one receive buffer are paused: one that holds less (a client that reads its answers)
    /// adds little by reading, and keeps being served.
    pub(crate) fn pace(&mut self, key: Key, st: &mut ConnState, held: usize) -> Option<Op> {
        let queued = st.queued_bytes();
        let queue_heap = st.send.as_ref().map_or(0, |q| q.heap_bytes());
        self.account(st, held + queue_heap);
        let holds = self.holds_much(queued.max(st.held_bytes as usize) as u64);
        if holds && self.over() && st.phase == Phase::Open && !st.has(flag::BUDGET_HOLD) {
            st.set(flag::BUDGET_HOLD);
            self.held.push(key);
            self.held_live += 1;
        }
        match reads(st.phase, st.flags, queued, self.marks) {
            Reads::Keep => None,
            Reads::Pause => {
                st.set(flag::RECV_PAUSED);
                st.clear(flag::RECV_REARM);
                add(&self.metrics.reads_paused, 1);
                add(&self.metrics.reads_pauses, 1);
                st.has(flag::RECV_ARMED).then_some(Op::CancelRecv { key })
            }
            Reads::Resume => {
                st.clear(flag::RECV_PAUSED);
                dec(&self.metrics.reads_paused);
                // An armed receive (its cancel not yet done) re-arms itself when it ends.
                if !st.has(flag::RECV_ARMED) {
                    st.set(flag::RECV_REARM);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKS: Marks = Marks {
        high_bytes: 1000,
        low_bytes: 100,
    };

    #[test]
    fn pauses_past_the_high_mark_and_resumes_below_the_low_mark() {
        let open = Phase::Open;
        assert_eq!(reads(open, 0, 1000, MARKS), Reads::Keep);
        assert_eq!(reads(open, 0, 1001, MARKS), Reads::Pause);
        let paused = flag::RECV_PAUSED;
        // Between the marks a paused connection stays paused, a reading one keeps reading.
        assert_eq!(reads(open, paused, 500, MARKS), Reads::Keep);
        assert_eq!(reads(open, 0, 500, MARKS), Reads::Keep);
        assert_eq!(reads(open, paused, 100, MARKS), Reads::Keep);
        assert_eq!(reads(open, paused, 99, MARKS), Reads::Resume);
    }

    #[test]
    fn only_an_open_connection_with_input_to_come_is_paused() {
        for phase in [Phase::Handshaking, Phase::Closing, Phase::Closed] {
            assert_eq!(reads(phase, 0, 1 << 20, MARKS), Reads::Keep);
            // A Closing connection reads to EOF: a pause from its Open days ends.
            assert_eq!(
                reads(phase, flag::RECV_PAUSED, 1 << 20, MARKS),
                Reads::Resume
            );
        }
        let done = flag::PEER_DONE | flag::RECV_PAUSED;
        assert_eq!(reads(Phase::Open, done, 1 << 20, MARKS), Reads::Resume);
    }

    #[test]
    fn a_connection_held_for_the_budget_is_paused_whatever_its_queue() {
        let held = flag::BUDGET_HOLD;
        assert_eq!(reads(Phase::Open, held, 0, MARKS), Reads::Pause);
        assert_eq!(
            reads(Phase::Open, held | flag::RECV_PAUSED, 0, MARKS),
            Reads::Keep
        );
        assert_eq!(
            reads(Phase::Open, flag::RECV_PAUSED, 0, MARKS),
            Reads::Resume
        );
        assert_eq!(reads(Phase::Closing, held, 0, MARKS), Reads::Keep);
    }

    /// Holds connection `index` for the budget, as `pace` does.
    fn hold(m: &mut Memory, index: u32) -> Key {
        let key = Key {
            index,
            generation: 1,
        };
        m.held.push(key);
        m.held_live += 1;
        key
    }

    fn memory(budget: u64) -> Memory {
        let cfg = Config {
            memory_budget_grace_ms: 100,
            recv_buffers_per_worker: 0,
            send_buffers_per_worker: 0,
            ..Config::default()
        };
        let budget = Arc::new(MemoryBudget::new(budget));
        Memory::new(&cfg, Arc::default(), budget)
    }

    #[test]
    fn over_the_budget_past_the_grace_sheds_then_releases_under_the_resume_mark() {
        let mut m = memory(800);
        m.pools(600);
        assert_eq!(m.turn(0), Turn::Calm);
        assert_eq!(m.budget.used_bytes(), 600);
        // At the shed mark (3/4 of 800 = 600) is not past it: no grace starts.
        assert_eq!(m.turn(5000), Turn::Calm);
        m.pools(750);
        hold(&mut m, 1);
        // Past the shed mark: nothing shed before the grace, then this worker's whole share of
        // the excess over the resume mark (3/8 of 800 = 300): all the use is this worker's.
        assert_eq!(m.turn(6000), Turn::Calm);
        assert_eq!(m.turn(6099), Turn::Calm);
        assert_eq!(m.turn(6100), Turn::Shed(450));
        // Not again within the grace...
        assert_eq!(m.turn(6110), Turn::Calm);
        // ...unless past the budget itself: then only a short pause between sheds.
        m.pools(801);
        assert_eq!(m.turn(6115), Turn::Calm, "within the pause between sheds");
        assert_eq!(m.turn(6120), Turn::Shed(501));
        assert_eq!(m.turn(6130), Turn::Calm);
        m.pools(299);
        assert!(matches!(m.turn(6160), Turn::Release(keys) if keys.len() == 1));
        assert_eq!(m.turn(6170), Turn::Calm);
    }

    #[test]
    fn held_connections_are_released_after_the_grace_below_the_pause_mark() {
        let mut m = memory(800);
        // Between the resume mark (300) and the pause mark (400), held by what they hold.
        m.pools(350);
        let key = hold(&mut m, 1);
        assert_eq!(m.turn(1000), Turn::Calm);
        assert_eq!(m.deadline_ms(), Some(1100));
        assert_eq!(m.turn(1099), Turn::Calm);
        assert!(matches!(m.turn(1100), Turn::Release(keys) if keys == [key]));
        assert_eq!(m.deadline_ms(), None);
        // Past the pause mark the grace does not run (only the stall's, tested below).
        m.pools(450);
        hold(&mut m, 1);
        assert_eq!(m.turn(2000), Turn::Calm);
        assert_eq!(m.turn(2500), Turn::Calm);
        assert_eq!(m.deadline_ms(), Some(2000 + STALL_GRACES * 100));
        // Back below it, it starts again from then.
        m.pools(350);
        assert_eq!(m.turn(2510), Turn::Calm);
        assert!(matches!(m.turn(2610), Turn::Release(_)));
        assert_eq!(m.deadline_ms(), None);
    }

    #[test]
    fn held_connections_that_stall_above_the_resume_mark_are_shed() {
        let mut m = memory(800);
        // Past the pause mark (400), below the shed mark (600): no grace for the budget runs.
        m.pools(500);
        hold(&mut m, 1);
        assert_eq!(m.turn(1000), Turn::Calm);
        assert_eq!(m.deadline_ms(), Some(1000 + STALL_GRACES * 100));
        assert_eq!(m.turn(1000 + STALL_GRACES * 100 - 1), Turn::Calm);
        // This worker's share of the excess over the resume mark (300).
        assert_eq!(m.turn(1000 + STALL_GRACES * 100), Turn::ShedHeld(200));
        assert_eq!(
            m.turn(1000 + STALL_GRACES * 100 + 50),
            Turn::Calm,
            "one grace between sheds"
        );
        // Nothing held: no stall, however high below the shed mark.
        let mut m = memory(800);
        m.pools(500);
        assert_eq!(m.turn(1000), Turn::Calm);
        assert_eq!(m.turn(100_000), Turn::Calm);
    }

    #[test]
    fn a_held_connection_that_ends_no_longer_counts_as_held() {
        use crate::proto::connection::{Connection, Limits, Role};
        let mut slots = super::super::slots::Slots::new();
        let key = slots.insert(3, Connection::new(Role::Server, Limits::default(), 0), 0);
        let st = &mut slots.get(key).unwrap().st;
        st.phase = Phase::Open;
        let mut m = memory(800);
        m.pools(500);
        assert_eq!(m.turn(0), Turn::Calm);
        // Over the pause mark: a connection that holds more than a receive buffer is held.
        assert!(
            m.pace(key, st, 1 << 20).is_none(),
            "no receive armed to cancel"
        );
        assert!(st.has(flag::BUDGET_HOLD | flag::RECV_PAUSED));
        assert_eq!(m.held_live, 1);
        m.forget(st);
        assert_eq!(m.held_live, 0);
        // Its key alone is left: dropped at once, and no stall is counted for it.
        assert!(matches!(m.turn(10), Turn::Release(keys) if keys == [key]));
        assert_eq!(m.turn(10 + 100 * STALL_GRACES), Turn::Calm);
    }

    #[test]
    fn a_fall_from_the_peak_is_trimmed_after_a_delay_and_not_too_often() {
        let mut m = memory(1 << 40);
        let t = 10_000; // well past the start: the first trim is not held back by the interval
        m.local = 100 << 20;
        assert!(!m.trim_due(t));
        m.local = 95 << 20;
        assert!(!m.trim_due(t + 10), "a small fall is no burst's end");
        m.local = 10 << 20;
        assert!(!m.trim_due(t + 20));
        assert_eq!(m.deadline_ms(), Some(t + 20 + TRIM_DELAY_MS));
        assert!(m.trim_due(t + 20 + TRIM_DELAY_MS));
        // One follow-up, an interval later, for what is freed after the trim.
        let next = t + 20 + TRIM_DELAY_MS + TRIM_INTERVAL_MS;
        assert_eq!(m.deadline_ms(), Some(next));
        // Another burst right after: its trim waits for the interval (the follow-up's time).
        m.local = 50 << 20;
        assert!(!m.trim_due(t + 300));
        m.local = 0;
        assert!(!m.trim_due(t + 310));
        assert_eq!(m.deadline_ms(), Some(next));
        assert!(m.trim_due(next));
        // A follow-up has none of its own.
        assert_eq!(m.deadline_ms(), None);
        assert!(!m.trim_due(next + 5 * TRIM_INTERVAL_MS));
        // A new fall starts it all again.
        m.local = 20 << 20;
        assert!(!m.trim_due(next + 6 * TRIM_INTERVAL_MS));
        m.local = 0;
        assert!(!m.trim_due(next + 6 * TRIM_INTERVAL_MS + 1));
        assert_eq!(
            m.deadline_ms(),
            Some(next + 6 * TRIM_INTERVAL_MS + 1 + TRIM_DELAY_MS)
        );
    }

    #[test]
    fn a_shared_frame_is_counted_until_its_last_reference_drops() {
        let budget = Arc::new(MemoryBudget::new(1 << 20));
        let frame = counted(vec![7u8; 1000], &budget);
        let copy = frame.clone();
        assert!(budget.used_bytes() >= 1000);
        drop(frame);
        assert!(budget.used_bytes() >= 1000);
        assert_eq!(&copy[..3], &[7, 7, 7]);
        drop(copy);
        assert_eq!(budget.used_bytes(), 0);
    }
}
