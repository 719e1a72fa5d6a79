//! Topic history on one node: positions for every publish, kept per topic within the limits, and
//! read back on a resume (issue #14). Off (`Config::history_messages_max == 0`) there is no
//! store at all and a publish costs what it did before.
//!
//! One [`HistoryStore`] per server, shared by every worker and publishing thread. A publish takes
//! its lock once to get its position, frame the positioned copy and post it to every worker;
//! posting inside the lock makes every worker's mailbox hold a topic's messages in offset order,
//! which is what lets a resuming subscriber drop exactly the live messages that its replay
//! already carried (see `docs/PUBSUB.md`, resume).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::handler::Frame;
use crate::history::{HistoryLimits, Position, Replay, TopicHistory};

/// A publish that has a position: the position, and the frame that positioned subscribers get
/// (`<position> <payload>`), framed once.
#[derive(Debug)]
pub(crate) struct Sequenced {
    pub position: Position,
    pub frame: Frame,
}

/// What a resume found: the frames to replay, in order, and whether something was missing.
pub(crate) struct Resumed {
    pub frames: Vec<Frame>,
    pub gap: bool,
    /// The latest position of the topic when the subscription was registered: live messages
    /// at or before it were replayed (or were before the resume point), so they are skipped.
    pub last: Position,
}

/// Every topic's history, behind one lock.
pub(crate) struct HistoryStore {
    limits: HistoryLimits,
    topics_max: usize,
    started: Instant,
    topics: Mutex<HashMap<Box<str>, TopicHistory<Frame>>>,
    /// Mixed into each new topic's epoch so that two topics made in the same nanosecond differ.
    made: AtomicU64,
    /// Topic histories dropped to stay within `topics_max` (their subscribers get a gap).
    pub evicted: AtomicU64,
    /// Topic histories dropped because the node may have missed messages (see `forget`).
    pub forgotten: AtomicU64,
    /// Resumes from a position, and those of them that were a gap.
    pub resumes: AtomicU64,
    pub gaps: AtomicU64,
}

impl HistoryStore {
    pub(crate) fn new(limits: HistoryLimits, topics_max: usize) -> HistoryStore {
        assert!(limits.messages_max >= 1 && topics_max >= 1);
        HistoryStore {
            limits,
            topics_max,
            started: Instant::now(),
            topics: Mutex::new(HashMap::new()),
            made: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            forgotten: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, TopicHistory<Frame>>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh epoch: random per process (std's per-process random hash keys), the time and a
    /// counter. An epoch only has to differ from every earlier one of the same topic name.
    fn new_epoch(&self) -> u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.made.fetch_add(1, Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        // 48 bits keep the written position short and are plenty against a collision.
        h.finish() & ((1 << 48) - 1)
    }

    fn topic<'m>(
        &self,
        map: &'m mut HashMap<Box<str>, TopicHistory<Frame>>,
        topic: &str,
        now_ms: u64,
    ) -> &'m mut TopicHistory<Frame> {
        if !map.contains_key(topic) && map.len() >= self.topics_max {
            self.make_room(map, now_ms);
        }
        map.entry(topic.into())
            .or_insert_with(|| TopicHistory::new(self.new_epoch(), self.limits))
    }

    /// Drops the histories that age has emptied; if none, the one whose latest message is the
    /// oldest. Only at the topic limit, so its O(topics) scan is rare.
    fn make_room(&self, map: &mut HashMap<Box<str>, TopicHistory<Frame>>, now_ms: u64) {
        let before = map.len();
        map.retain(|_, h| {
            h.trim(now_ms);
            !h.is_empty()
        });
        if map.len() == before {
            let oldest = map
                .iter()
                .min_by_key(|(_, h)| h.newest_ms())
                .map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                map.remove(&t);
            }
        }
        self.evicted.fetch_add((before - map.len()) as u64, Relaxed);
    }

    /// Drops the history of every topic `which` names: the node may have missed messages of it
    /// (it left the broker's channel, the broker link broke, or a loss was detected), so its
    /// next message starts a new epoch and older positions resume as a gap.
    pub(crate) fn forget(&self, which: impl Fn(&str) -> bool) {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|t, _| !which(t));
        self.forgotten
            .fetch_add((before - map.len()) as u64, Relaxed);
    }

    /// Topics whose history is held now.
    pub(crate) fn topics_held(&self) -> usize {
        self.lock().len()
    }

    /// Gives the next message of `topic` its position, keeps the frame `make` builds for it, and
    /// runs `post` with both while the lock is held (so mailboxes see offsets in order).
    pub(crate) fn publish(
        &self,
        topic: &str,
        make: impl FnOnce(Position) -> Frame,
        post: impl FnOnce(Sequenced),
    ) {
        let now = self.now_ms();
        let mut map = self.lock();
        let h = self.topic(&mut map, topic, now);
        let position = h.next();
        let frame = make(position);
        let got = h.push(frame.clone(), now);
        debug_assert_eq!(got, position);
        post(Sequenced { position, frame });
    }

    /// Registers a positioned subscription: what came after `from` (nothing if `None`), and the
    /// topic's latest position, read under one lock.
    pub(crate) fn resume(&self, topic: &str, from: Option<Position>) -> Resumed {
        let now = self.now_ms();
        let mut map = self.lock();
        let h = self.topic(&mut map, topic, now);
        let last = h.last();
        let Some(from) = from else {
            return Resumed {
                frames: Vec::new(),
                gap: false,
                last,
            };
        };
        let replay = h.replay_after(from, now);
        let gap = matches!(replay, Replay::Gap(_));
        self.resumes.fetch_add(1, Relaxed);
        self.gaps.fetch_add(u64::from(gap), Relaxed);
        let frames = replay
            .messages()
            .iter()
            .map(|(_, f)| (*f).clone())
            .collect();
        Resumed { frames, gap, last }
    }
}
