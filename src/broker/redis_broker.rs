//! The Redis implementation of [`Broker`]: plain `PUBLISH`/`SUBSCRIBE` (Redis ≥ 2, RESP2) with
//! the `redis` crate's synchronous client, two connections per Redis: one that publishes in
//! pipelines, one in subscribe mode (a connection in subscribe mode may send nothing else).

use std::io;
use std::time::Duration;

use super::{Broker, HistoryLink, PublishLink, SubscribeSession};
use crate::history::{HistoryLimits, Position};
use crate::history_redis::{StreamHistory, StreamReplay};

/// One Redis server, by URL (`redis://HOST:PORT[/DB]`, with `user:password@` if needed).
pub struct RedisBroker {
    url: String,
    client: redis::Client,
}

fn io_err(e: redis::RedisError) -> io::Error {
    io::Error::other(e)
}

impl RedisBroker {
    /// Parses `url` (nothing is connected yet).
    pub fn new(url: &str) -> io::Result<RedisBroker> {
        let client = redis::Client::open(url).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("broker {url}: {e}"))
        })?;
        Ok(RedisBroker {
            url: url.to_string(),
            client,
        })
    }

    fn connect(&self, timeout: Duration) -> io::Result<redis::Connection> {
        let con = self
            .client
            .get_connection_with_timeout(timeout)
            .map_err(io_err)?;
        con.set_write_timeout(Some(timeout)).map_err(io_err)?;
        con.set_read_timeout(Some(timeout)).map_err(io_err)?;
        Ok(con)
    }
}

struct RedisPublish {
    con: redis::Connection,
    pipe: redis::Pipeline,
    replies: Vec<i64>,
}

impl PublishLink for RedisPublish {
    fn publish(&mut self, batch: &[(&[u8], &[u8])]) -> io::Result<()> {
        self.pipe.clear();
        for (channel, payload) in batch {
            self.pipe.cmd("PUBLISH").arg(*channel).arg(*payload);
        }
        self.replies = self.pipe.query(&mut self.con).map_err(io_err)?;
        if self.replies.len() != batch.len() {
            return Err(io::Error::other("PUBLISH: wrong number of replies"));
        }
        Ok(())
    }
}

struct RedisHistory {
    con: redis::Connection,
    store: StreamHistory,
}

impl HistoryLink for RedisHistory {
    fn publish(
        &mut self,
        batch: &[(&str, &[u8], &[u8])],
        now_ms: u64,
        new_epoch: u64,
        out: &mut Vec<Position>,
    ) -> io::Result<()> {
        self.store
            .publish_batch(&mut self.con, batch, now_ms, new_epoch, out)
            .map_err(io_err)
    }

    fn replay_after(
        &mut self,
        topic: &str,
        after: Position,
        now_ms: u64,
    ) -> io::Result<StreamReplay> {
        self.store
            .replay_after(&mut self.con, topic, after, now_ms)
            .map_err(io_err)
    }
}

impl Broker for RedisBroker {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn connect_publisher(&self, timeout: Duration) -> io::Result<Box<dyn PublishLink>> {
        Ok(Box::new(RedisPublish {
            con: self.connect(timeout)?,
            pipe: redis::pipe(),
            replies: Vec::new(),
        }))
    }

    fn connect_history(
        &self,
        timeout: Duration,
        limits: HistoryLimits,
    ) -> io::Result<Box<dyn HistoryLink>> {
        let mut con = self.connect(timeout)?;
        let mut store = StreamHistory::new(limits);
        store.load(&mut con).map_err(io_err)?;
        Ok(Box::new(RedisHistory { con, store }))
    }

    fn run_subscriber(
        &self,
        timeout: Duration,
        poll: Duration,
        session: &mut dyn SubscribeSession,
    ) -> io::Result<()> {
        let mut con = self.connect(timeout)?;
        let mut ps = con.as_pubsub();
        ps.set_read_timeout(Some(poll)).map_err(io_err)?;
        session.connected();
        let (mut subs, mut unsubs) = (Vec::new(), Vec::new());
        let mut heard = std::time::Instant::now();
        loop {
            if heard.elapsed() > timeout {
                // Quiet for a while: a Redis gone without a FIN (a partition) must not leave
                // the node deaf forever. A PING answers within the timeout or the link fails.
                ps.set_read_timeout(Some(timeout)).map_err(io_err)?;
                ps.ping::<redis::Value>().map_err(io_err)?;
                ps.set_read_timeout(Some(poll)).map_err(io_err)?;
                heard = std::time::Instant::now();
            }
            if session.changes(&mut subs, &mut unsubs) {
                return Ok(());
            }
            if !subs.is_empty() || !unsubs.is_empty() {
                // Waiting for the confirmation must not time out at the poll interval: a
                // reply timed out there would be taken for the next one.
                ps.set_read_timeout(Some(timeout)).map_err(io_err)?;
                if !subs.is_empty() {
                    ps.subscribe(&subs[..]).map_err(io_err)?;
                }
                // Never an empty UNSUBSCRIBE: that would leave every channel.
                if !unsubs.is_empty() {
                    ps.unsubscribe(&unsubs[..]).map_err(io_err)?;
                }
                ps.set_read_timeout(Some(poll)).map_err(io_err)?;
                session.subscribed(subs.len(), unsubs.len());
                subs.clear();
                unsubs.clear();
            }
            match ps.get_message() {
                Ok(msg) => {
                    heard = std::time::Instant::now();
                    session.deliver(msg.get_channel_name(), msg.get_payload_bytes());
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(io_err(e)),
            }
            session.settled();
        }
    }
}
