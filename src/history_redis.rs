//! Topic history in Redis Streams, shared by every node (issue #14 with a broker).
//!
//! Runs on a broker thread, never on a worker: every call is a blocking round trip. Two Lua
//! scripts keep each step atomic on the Redis that owns the topic:
//!
//! - **publish**: the topic's meta hash (`ringws:m:{topic}`) holds its epoch and its latest offset.
//!   The script makes the epoch if the hash is gone (a new topic, or Redis lost its data), adds
//!   one to the offset, appends `{t: time, p: payload}` to the stream (`ringws:h:{topic}`) under
//!   the id `<offset>-0` with `MAXLEN` the message bound, and `PUBLISH`es `<epoch> <offset>
//!   <payload>` on the channel given, so live delivery and history are in one order. One call
//!   takes a whole batch of messages (the publish thread's pipeline).
//! - **replay**: reads the epoch, the latest offset and the entries after an offset, together.
//!
//! The answer follows the same contract as [`TopicHistory::replay_after`] (its tests compare
//! the two on a real Redis): complete, or a gap (trimmed by count or age, another epoch, an
//! offset never issued) with what is still held.
//!
//! [`TopicHistory::replay_after`]: crate::history::TopicHistory::replay_after

use redis::{Connection, RedisResult, Value};

use crate::history::{HistoryLimits, Position};

/// Publishes a batch: `KEYS` are each message's stream and meta keys in turn; `ARGV` is the
/// `MAXLEN`, the epoch for a topic without one, the time, a time to live in ms for both keys
/// (0: none; see [`EXPIRE_SLACK_MS`]), then each message's payload and channel. One call for a whole batch: Redis runs a script call far slower than the commands
/// in it, so one per message would cost several times more.
const PUBLISH_LUA: &str = r#"
local out = {}
local ttl = tonumber(ARGV[4])
for i = 1, #KEYS / 2 do
  local h, m = KEYS[2 * i - 1], KEYS[2 * i]
  local payload, channel = ARGV[2 * i + 3], ARGV[2 * i + 4]
  local epoch = redis.call('HGET', m, 'e')
  if not epoch then
    -- A new epoch: whatever stream is left (its meta evicted under maxmemory) is of a lost
    -- one, and its ids would refuse offsets that start again from 1.
    epoch = ARGV[2]
    redis.call('DEL', h)
    redis.call('HSET', m, 'e', epoch)
  end
  local offset = redis.call('HINCRBY', m, 'o', 1)
  redis.call('XADD', h, 'MAXLEN', ARGV[1], offset .. '-0', 't', ARGV[3], 'p', payload)
  if ttl > 0 then
    redis.call('PEXPIRE', h, ttl)
    redis.call('PEXPIRE', m, ttl)
  end
  if channel ~= '' then
    redis.call('PUBLISH', channel, epoch .. ' ' .. offset .. ' ' .. payload)
  end
  out[2 * i - 1] = epoch
  out[2 * i] = offset
end
return out
"#;

const REPLAY_LUA: &str = r#"
local meta = redis.call('HMGET', KEYS[2], 'e', 'o')
if not meta[1] then
  return {false, 0, {}}
end
return {meta[1], tonumber(meta[2]), redis.call('XRANGE', KEYS[1], ARGV[1], '+')}
"#;

/// With an age bound, a topic's two keys expire this long after its messages are all too old
/// to replay (its last publish + the age bound + this), so that a topic nobody publishes to
/// leaves Redis; its next publish then starts a new epoch. A resume from it is a gap either
/// way (every message it held was too old), so the slack only keeps Redis's clock and the
/// nodes' clocks from disagreeing about the edge.
pub const EXPIRE_SLACK_MS: u64 = 60_000;

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
        let mut out = Vec::with_capacity(1);
        self.publish_batch(
            con,
            &[(topic, channel, payload)],
            now_ms,
            new_epoch,
            &mut out,
        )?;
        Ok(out[0])
    }

    /// Loads both scripts on `con` now (a new connection), so that the first call does not pay
    /// for a `NOSCRIPT` round trip.
    pub fn load(&mut self, con: &mut Connection) -> RedisResult<()> {
        let p: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(PUBLISH_LUA)
            .query(con)?;
        let r: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(REPLAY_LUA)
            .query(con)?;
        self.publish_sha = Some(p);
        self.replay_sha = Some(r);
        Ok(())
    }

    /// [`StreamHistory::publish`] for many messages in one script call (atomic as a whole):
    /// each `(topic, channel, payload)` in order, their positions appended to `out`. `Err`:
    /// the fate of the batch is unknown (a broken link may have cut it off after Redis ran it).
    pub fn publish_batch(
        &mut self,
        con: &mut Connection,
        batch: &[(&str, &[u8], &[u8])],
        now_ms: u64,
        new_epoch: u64,
        out: &mut Vec<Position>,
    ) -> RedisResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(2 * batch.len());
        for (topic, _, _) in batch {
            keys.push(stream_key(topic));
            keys.push(meta_key(topic));
        }
        let maxlen = self.limits.messages_max.to_string();
        let epoch = format!("{new_epoch:x}");
        let now = now_ms.to_string();
        let ttl = match self.limits.age_max_ms {
            0 => 0,
            age => age.saturating_add(EXPIRE_SLACK_MS),
        }
        .to_string();
        let mut args: Vec<&[u8]> = Vec::with_capacity(4 + 2 * batch.len());
        args.extend([
            maxlen.as_bytes(),
            epoch.as_bytes(),
            now.as_bytes(),
            ttl.as_bytes(),
        ]);
        for (_, channel, payload) in batch {
            args.push(payload);
            args.push(channel);
        }
        let v = Self::eval(con, &mut self.publish_sha, PUBLISH_LUA, &keys, &args)?;
        let flat: Vec<Value> = redis::from_redis_value(v)?;
        if flat.len() != 2 * batch.len() {
            return Err(bad("batch length"));
        }
        for pair in flat.chunks(2) {
            let epoch: String = redis::from_redis_value(pair[0].clone())?;
            let offset: u64 = redis::from_redis_value(pair[1].clone())?;
            let epoch = parse_epoch(&epoch).ok_or_else(|| bad("epoch"))?;
            out.push(Position { epoch, offset });
        }
        Ok(())
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
            // Only a leading run is too old, as in `TopicHistory` (which trims from the front):
            // the times come from the publishing nodes' clocks, so one entry that looks old
            // after a newer one must not leave a hole in the middle of a replay.
            let too_old =
                self.limits.age_max_ms > 0 && now_ms.saturating_sub(t) > self.limits.age_max_ms;
            if too_old && messages.is_empty() {
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
