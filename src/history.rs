//! Per-topic message history and stream positions, for resume without loss.
//!
//! Sans-IO: no clock, no locks, no threads. Every call that needs the time takes `now_ms`; the
//! caller decides where a [`TopicHistory`] lives (one node: behind a lock shared by the workers;
//! with a broker: the broker's own stream, and this type only for the positions).
//!
//! # Positions
//!
//! Every message published on a topic gets a [`Position`]: an `epoch` and an `offset`. The offset
//! grows by one per message on that topic. The epoch names one unbroken history: it changes
//! whenever history could have been lost (a node restarted without a broker, a broker lost its
//! data), so an offset is only comparable with offsets of the same epoch. A position is written
//! as one token without spaces, `<epoch in hex>-<offset>` ([`Position`]'s `Display` and
//! `FromStr`).
//!
//! # Resume contract
//!
//! [`TopicHistory::replay_after`]`(p)` answers what a subscriber that has seen everything up to
//! and including `p` has missed:
//! - [`Replay::Complete`]: every message after `p` that was published is still held, and is
//!   returned in order (possibly none);
//! - [`Replay::Gap`]: some message after `p` is no longer held (trimmed by count or age), or `p`
//!   names another epoch, or an offset this history never issued. What is still held of the
//!   current epoch after `p` is returned in order, so the subscriber loses no more than it must
//!   and is told that it lost something.
//!
//! [`reference::Model`] states the same contract as plain code; the tests compare the two.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

/// Where a message stands in its topic's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The history this offset belongs to; a new epoch starts whenever history may have been lost.
    pub epoch: u64,
    /// The message's number in its epoch: the first message is 1, then +1 per message.
    pub offset: u64,
}

impl Position {
    /// The position "before the first message" of `epoch`: resuming from it replays everything.
    pub fn start(epoch: u64) -> Position {
        Position { epoch, offset: 0 }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.epoch, self.offset)
    }
}

/// A token that is not a position written by [`Position`]'s `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPosition;

impl fmt::Display for BadPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a position is <epoch in hex>-<offset in decimal>")
    }
}

impl std::error::Error for BadPosition {}

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Position, BadPosition> {
        let (epoch, offset) = s.split_once('-').ok_or(BadPosition)?;
        let digits = |t: &str, radix: u32| {
            !t.is_empty() && t.len() <= 20 && t.chars().all(|c| c.is_digit(radix))
        };
        if !digits(epoch, 16) || !digits(offset, 10) {
            return Err(BadPosition);
        }
        Ok(Position {
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| BadPosition)?,
            offset: offset.parse().map_err(|_| BadPosition)?,
        })
    }
}

/// How much history one topic keeps; both bounds apply. (History off is no `TopicHistory` at all,
/// so it costs nothing: see `Config::history_messages_max`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most messages kept per topic (the oldest go first).
    pub messages_max: usize,
    /// Messages older than this are dropped; 0 keeps them regardless of age.
    pub age_max_ms: u64,
}

/// The outcome of a resume.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay<'a, T> {
    /// Nothing was lost: these are all the messages after the position, in order.
    Complete(Vec<(Position, &'a T)>),
    /// Something after the position is no longer held (or the position is of another epoch):
    /// these are what is still held after it, in order.
    Gap(Vec<(Position, &'a T)>),
}

impl<T> Replay<'_, T> {
    /// The messages to replay, whether or not there was a gap.
    pub fn messages(&self) -> &[(Position, &T)] {
        match self {
            Replay::Complete(m) | Replay::Gap(m) => m,
        }
    }

    /// Whether some message after the position could not be replayed.
    pub fn is_gap(&self) -> bool {
        matches!(self, Replay::Gap(_))
    }
}

struct Entry<T> {
    at_ms: u64,
    item: T,
}

/// One topic's bounded history: the last messages, their positions and when they came.
pub struct TopicHistory<T> {
    epoch: u64,
    /// Offset of `entries[0]`, or of the next message when `entries` is empty.
    first_offset: u64,
    entries: VecDeque<Entry<T>>,
    limits: HistoryLimits,
}

impl<T> TopicHistory<T> {
    /// An empty history of `epoch`; the first message gets offset 1.
    pub fn new(epoch: u64, limits: HistoryLimits) -> TopicHistory<T> {
        TopicHistory {
            epoch,
            first_offset: 1,
            entries: VecDeque::new(),
            limits,
        }
    }

    /// The epoch of every position this history issues.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The position of the latest message (offset 0 before the first one).
    pub fn last(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.next_offset() - 1,
        }
    }

    /// The position the next [`push`](Self::push) will return.
    pub fn next(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.next_offset(),
        }
    }

    /// When the latest message held came (0 if none is held).
    pub fn newest_ms(&self) -> u64 {
        self.entries.back().map_or(0, |e| e.at_ms)
    }

    fn next_offset(&self) -> u64 {
        self.first_offset + self.entries.len() as u64
    }

    /// Messages held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a message published at `now_ms` and returns its position. Trims by count and age.
    pub fn push(&mut self, item: T, now_ms: u64) -> Position {
        let position = Position {
            epoch: self.epoch,
            offset: self.next_offset(),
        };
        self.entries.push_back(Entry {
            at_ms: now_ms,
            item,
        });
        self.trim(now_ms);
        position
    }

    /// Drops what the limits no longer allow at `now_ms`.
    pub fn trim(&mut self, now_ms: u64) {
        while self.entries.len() > self.limits.messages_max || self.too_old(now_ms) {
            self.entries.pop_front();
            self.first_offset += 1;
        }
    }

    fn too_old(&self, now_ms: u64) -> bool {
        let max = self.limits.age_max_ms;
        max > 0
            && self
                .entries
                .front()
                .is_some_and(|e| now_ms.saturating_sub(e.at_ms) > max)
    }

    /// What a subscriber that has seen everything up to `after` has missed (see the module doc).
    pub fn replay_after(&mut self, after: Position, now_ms: u64) -> Replay<'_, T> {
        self.trim(now_ms);
        let next = self.next_offset();
        let known = after.epoch == self.epoch && after.offset < next;
        let from = if known {
            after.offset + 1
        } else {
            self.first_offset
        };
        let complete = known && from >= self.first_offset;
        let skip = from.saturating_sub(self.first_offset) as usize;
        let epoch = self.epoch;
        let first = self.first_offset;
        let messages = self
            .entries
            .iter()
            .enumerate()
            .skip(skip)
            .map(|(i, e)| {
                let offset = first + i as u64;
                (Position { epoch, offset }, &e.item)
            })
            .collect();
        if complete {
            Replay::Complete(messages)
        } else {
            Replay::Gap(messages)
        }
    }
}

/// The resume contract as plain code: every message ever pushed, and a linear scan.
pub mod reference {
    use super::{HistoryLimits, Position};

    /// Keeps everything; answers `replay_after` by filtering.
    pub struct Model<T> {
        epoch: u64,
        limits: HistoryLimits,
        all: Vec<(u64, T)>,
    }

    impl<T: Clone> Model<T> {
        /// An empty model of `epoch`.
        pub fn new(epoch: u64, limits: HistoryLimits) -> Model<T> {
            Model {
                epoch,
                limits,
                all: Vec::new(),
            }
        }

        /// Records a message; its offset is its number, from 1.
        pub fn push(&mut self, item: T, now_ms: u64) -> Position {
            self.all.push((now_ms, item));
            Position {
                epoch: self.epoch,
                offset: self.all.len() as u64,
            }
        }

        /// The offset of the latest message pushed (0 before the first).
        pub fn last_offset(&self) -> u64 {
            self.all.len() as u64
        }

        /// Whether the message with `offset` is still held, `seen_ms` being the latest time the
        /// history was given: it is among the last `messages_max`, and not older than
        /// `age_max_ms` then (times only grow, so what was once too old still is).
        fn held(&self, offset: u64, seen_ms: u64) -> bool {
            let n = self.all.len() as u64;
            let by_count = n - offset < self.limits.messages_max as u64;
            let at_ms = self.all[offset as usize - 1].0;
            let max = self.limits.age_max_ms;
            let by_age = max == 0 || seen_ms.saturating_sub(at_ms) <= max;
            by_count && by_age
        }

        /// The expected answer: `(gap, messages)`. `seen_ms` is the latest `now_ms` given to the
        /// history so far (push or replay), since age trimming happens at those times.
        pub fn replay_after(&self, after: Position, seen_ms: u64) -> (bool, Vec<(Position, T)>) {
            let n = self.all.len() as u64;
            let known = after.epoch == self.epoch && after.offset <= n;
            let first_held = (1..=n).find(|&o| self.held(o, seen_ms)).unwrap_or(n + 1);
            let from = if known { after.offset + 1 } else { first_held };
            let gap = !known || from < first_held;
            let messages = (from.max(first_held)..=n)
                .map(|o| {
                    let p = Position {
                        epoch: self.epoch,
                        offset: o,
                    };
                    (p, self.all[o as usize - 1].1.clone())
                })
                .collect();
            (gap, messages)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HistoryLimits = HistoryLimits {
        messages_max: 3,
        age_max_ms: 0,
    };

    fn items<T: Copy>(r: &Replay<'_, T>) -> Vec<(u64, T)> {
        r.messages().iter().map(|(p, t)| (p.offset, **t)).collect()
    }

    #[test]
    fn positions_print_and_parse() {
        let p = Position {
            epoch: 0xdead_beef,
            offset: 42,
        };
        assert_eq!(p.to_string(), "deadbeef-42");
        assert_eq!("deadbeef-42".parse::<Position>(), Ok(p));
        for bad in [
            "", "-", "1-", "-1", "x-1", "1-x", "1 -2", "1-2-3", "+1-2", "1-+2",
        ] {
            assert_eq!(bad.parse::<Position>(), Err(BadPosition), "{bad:?}");
        }
        assert_eq!("ffffffffffffffff1-1".parse::<Position>(), Err(BadPosition));
    }

    #[test]
    fn offsets_count_from_one() {
        let mut h = TopicHistory::new(7, LIMITS);
        assert_eq!(h.last(), Position::start(7));
        assert_eq!(
            h.push('a', 0),
            Position {
                epoch: 7,
                offset: 1
            }
        );
        assert_eq!(
            h.push('b', 0),
            Position {
                epoch: 7,
                offset: 2
            }
        );
        assert_eq!(h.last().offset, 2);
    }

    #[test]
    fn resume_replays_what_came_after() {
        let mut h = TopicHistory::new(7, LIMITS);
        for c in ['a', 'b', 'c'] {
            h.push(c, 0);
        }
        let r = h.replay_after(
            Position {
                epoch: 7,
                offset: 1,
            },
            0,
        );
        assert!(!r.is_gap());
        assert_eq!(items(&r), vec![(2, 'b'), (3, 'c')]);
        let r = h.replay_after(
            Position {
                epoch: 7,
                offset: 3,
            },
            0,
        );
        assert_eq!(r, Replay::Complete(vec![]));
    }

    #[test]
    fn trimmed_by_count_is_a_gap() {
        let mut h = TopicHistory::new(7, LIMITS);
        for c in ['a', 'b', 'c', 'd', 'e'] {
            h.push(c, 0);
        }
        assert_eq!(h.len(), 3);
        let r = h.replay_after(Position::start(7), 0);
        assert!(r.is_gap());
        assert_eq!(items(&r), vec![(3, 'c'), (4, 'd'), (5, 'e')]);
        // Having seen 2, nothing is missing: 3, 4, 5 are all held.
        let r = h.replay_after(
            Position {
                epoch: 7,
                offset: 2,
            },
            0,
        );
        assert!(!r.is_gap());
    }

    #[test]
    fn trimmed_by_age_is_a_gap() {
        let limits = HistoryLimits {
            messages_max: 100,
            age_max_ms: 1_000,
        };
        let mut h = TopicHistory::new(1, limits);
        h.push('a', 0);
        h.push('b', 500);
        let r = h.replay_after(Position::start(1), 1_200);
        assert!(r.is_gap());
        assert_eq!(items(&r), vec![(2, 'b')]);
        assert!(h.replay_after(Position::start(1), 2_000).is_gap());
        assert!(h.is_empty());
        assert_eq!(h.last().offset, 2, "trimming never reuses an offset");
    }

    #[test]
    fn another_epoch_or_a_future_offset_is_a_gap() {
        let mut h = TopicHistory::new(2, LIMITS);
        h.push('a', 0);
        let r = h.replay_after(
            Position {
                epoch: 1,
                offset: 1,
            },
            0,
        );
        assert!(r.is_gap());
        assert_eq!(items(&r), vec![(1, 'a')]);
        let r = h.replay_after(
            Position {
                epoch: 2,
                offset: 9,
            },
            0,
        );
        assert!(r.is_gap());
    }

    /// A tiny xorshift, so that the comparison with the model is repeatable without a crate.
    fn next(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn matches_the_reference_model() {
        for case in 0..300u64 {
            let mut seed = case.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let limits = HistoryLimits {
                messages_max: 1 + (next(&mut seed) % 8) as usize,
                age_max_ms: [0, 50, 200][(next(&mut seed) % 3) as usize],
            };
            let mut h = TopicHistory::new(5, limits);
            let mut m = reference::Model::new(5, limits);
            let mut now = 0;
            for step in 0..60u32 {
                now += next(&mut seed) % 40;
                if !next(&mut seed).is_multiple_of(3) {
                    assert_eq!(h.push(step, now), m.push(step, now));
                } else {
                    let offset = next(&mut seed) % (h.last().offset + 3);
                    let epoch = if next(&mut seed).is_multiple_of(10) {
                        4
                    } else {
                        5
                    };
                    let after = Position { epoch, offset };
                    let got = h.replay_after(after, now);
                    let got = (got.is_gap(), items(&got));
                    let (gap, msgs) = m.replay_after(after, now);
                    let want = (gap, msgs.iter().map(|(p, t)| (p.offset, *t)).collect());
                    assert_eq!(got, want, "case {case} step {step} after {after}");
                }
            }
        }
    }
}
