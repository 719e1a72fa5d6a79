//! Topic history in Redis Streams, shared by every node (issue #14 with a broker).
//!
//! Runs on a broker thread, never on a worker: every call is a blocking round trip. Two Lua
//! scripts keep each step atomic on the Redis that owns the topic:
//!
//! - **publish**: the topic's meta hash (`ringws:m:{topic}`) holds its epoch and its latest offset.
//!   The script makes the epoch if the hash is gone (a new topic, or Redis lost its data), adds
//!   one to the offset, appends `{t: time, p: payload}` to the stream (`ringws:h:{topic}`) under
//!   the id `<offset>-0` with `MAXLEN` the message bound, and `PUBLISH`es `<epoch> <offset>
//!   <payload>` on the channel given, so live delivery and history are in one order.
//! - **replay**: reads the epoch, the latest offset and the entries after an offset, together.
//!
//! The answer follows the same contract as [`TopicHistory::replay_after`] (its tests compare
//! the two on a real Redis): complete, or a gap (trimmed by count or age, another epoch, an
//! offset never issued) with what is still held.
//!
//! [`TopicHistory::replay_after`]: crate::history::TopicHistory::replay_after

use redis::{Connection, RedisResult, Value};

use crate::history::{HistoryLimits, Position};

const PUBLISH_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[2], 'e', epoch)
end
local offset = redis.call('HINCRBY', KEYS[2], 'o', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], offset .. '-0', 't', ARGV[4], 'p', ARGV[1])
if ARGV[5] ~= '' then
  redis.call('PUBLISH', ARGV[5], epoch .. ' ' .. offset .. ' ' .. ARGV[1])
end
return {epoch, offset}
"#;

const REPLAY_LUA: &str = r#"
local meta = redis.call('HMGET', KEYS[2], 'e', 'o')
if not meta[1] then
  return {false, 0, {}}
end
return {meta[1], tonumber(meta[2]), redis.call('XRANGE', KEYS[1], ARGV[1], '+')}
"#;

/// One stream entry as XRANGE returns it: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// What a replay found: the messages to replay, in order, whether something was missing, and
/// the topic's latest position when it was read (`None`: the topic has no history at all).
#[derive(Debug, PartialEq, Eq)]
pub struct StreamReplay {
    pub messages: Vec<(Position, Vec<u8>)>,
    pub gap: bool,
    pub last: Option<Position>,
}

/// One topic history store in Redis, with its limits; holds the loaded scripts' hashes.
pub struct StreamHistory {
    limits: HistoryLimits,
    publish_sha: Option<String>,
    replay_sha: Option<String>,
}

fn stream_key(topic: &str) -> String {
    format!("ringws:h:{topic}")
}

fn meta_key(topic: &str) -> String {
    format!("ringws:m:{topic}")
}

/// An epoch written as [`Position`] writes it (hex), back to a number.
fn parse_epoch(v: &str) -> Option<u64> {
    u64::from_str_radix(v, 16).ok()
}

impl StreamHistory {
    /// A store with these limits (the scripts are loaded at first use on each connection).
    pub fn new(limits: HistoryLimits) -> StreamHistory {
        assert!(limits.messages_max >= 1);
        StreamHistory {
            limits,
            publish_sha: None,
            replay_sha: None,
        }
    }

    /// Forgets the loaded scripts (after a reconnect: the new server may not have them).
    pub fn reset(&mut self) {
        self.publish_sha = None;
        self.replay_sha = None;
    }

    /// Runs a script by its hash, loading it first if needed, and again if Redis forgot it.
    fn eval(
        con: &mut Connection,
        sha: &mut Option<String>,
        lua: &str,
        keys: &[String],
        args: &[&[u8]],
    ) -> RedisResult<Value> {
        for _ in 0..2 {
            let hash = match sha {
                Some(h) => h.clone(),
                None => {
                    let h: String = redis::cmd("SCRIPT").arg("LOAD").arg(lua).query(con)?;
                    sha.insert(h).clone()
                }
            };
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&hash).arg(keys.len()).arg(keys);
            for a in args {
                cmd.arg(*a);
            }
            match cmd.query::<Value>(con) {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    *sha = None;
                }
                other => return other,
            }
        }
        Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "script not loaded",
        )))
    }

    /// Appends `payload` to `topic`'s history, and publishes it on `channel` (none if empty),
    /// atomically; returns its position. `new_epoch` is used if the topic has none yet.
    pub fn publish(
        &mut self,
        con: &mut Connection,
        topic: &str,
        channel: &[u8],
        payload: &[u8],
        now_ms: u64,
        new_epoch: u64,
    ) -> RedisResult<Position> {
        let keys = [stream_key(topic), meta_key(topic)];
        let maxlen = self.limits.messages_max.to_string();
        let epoch = format!("{new_epoch:x}");
        let now = now_ms.to_string();
        let args: [&[u8]; 5] = [
            payload,
            maxlen.as_bytes(),
            epoch.as_bytes(),
            now.as_bytes(),
            channel,
        ];
        let v = Self::eval(con, &mut self.publish_sha, PUBLISH_LUA, &keys, &args)?;
        let (epoch, offset): (String, u64) = redis::from_redis_value(v)?;
        let epoch = parse_epoch(&epoch).ok_or_else(|| bad("epoch"))?;
        Ok(Position { epoch, offset })
    }

    /// What a subscriber that has seen everything up to `after` has missed, at `now_ms`.
    pub fn replay_after(
        &mut self,
        con: &mut Connection,
        topic: &str,
        after: Position,
        now_ms: u64,
    ) -> RedisResult<StreamReplay> {
        let keys = [stream_key(topic), meta_key(topic)];
        let start = format!("{}-0", after.offset.saturating_add(1));
        let v = Self::eval(
            con,
            &mut self.replay_sha,
            REPLAY_LUA,
            &keys,
            &[start.as_bytes()],
        )?;
        let (epoch, offset, entries): (Option<String>, u64, Vec<StreamEntry>) =
            redis::from_redis_value(v)?;
        let Some(epoch) = epoch else {
            // No history at all: nothing was kept, so a resume from anywhere is a gap.
            return Ok(StreamReplay {
                messages: Vec::new(),
                gap: true,
                last: None,
            });
        };
        let epoch = parse_epoch(&epoch).ok_or_else(|| bad("epoch"))?;
        let last = Position { epoch, offset };
        let known = after.epoch == epoch && after.offset <= offset;
        let mut messages = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let o: u64 = id
                .split_once('-')
                .and_then(|(o, _)| o.parse().ok())
                .ok_or_else(|| bad("stream id"))?;
            let mut t = 0u64;
            let mut p = None;
            for (k, v) in fields {
                match k.as_str() {
                    "t" => {
                        t = std::str::from_utf8(&v)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0)
                    }
                    "p" => p = Some(v),
                    _ => {}
                }
            }
            let too_old =
                self.limits.age_max_ms > 0 && now_ms.saturating_sub(t) > self.limits.age_max_ms;
            if too_old {
                continue;
            }
            let payload = p.ok_or_else(|| bad("payload"))?;
            messages.push((Position { epoch, offset: o }, payload));
        }
        if !known {
            // Another epoch (or a future offset): everything held of this epoch, and a gap.
            return self
                .replay_after(con, topic, Position::start(epoch), now_ms)
                .map(|mut r| {
                    r.gap = true;
                    r
                });
        }
        let first = messages.first().map_or(offset + 1, |(p, _)| p.offset);
        let gap = first > after.offset + 1;
        Ok(StreamReplay {
            messages,
            gap,
            last: Some(last),
        })
    }
}

fn bad(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Parse,
        "unexpected history reply",
        what.to_string(),
    ))
}
