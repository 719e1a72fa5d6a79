//! The handlers behind `ringws serve --mode echo|broadcast|pubsub`.
//!
//! The pubsub text protocol (see docs/PUBSUB.md): `sub <topic>`, `unsub <topic>`,
//! `pub <topic> <payload>`, and with history on `psub <topic> [<position>]`. A subscriber
//! receives `<payload>` as a text message (`<position> <payload>` after `psub`).

use crate::handler::{Conn, Handler, Message, Resume};
use crate::history::Position;

/// Every message goes back unchanged.
pub struct Echo;

impl Handler for Echo {
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        conn.send(msg);
    }
}

/// Every message goes to every open connection on every worker (the sender included).
pub struct Broadcast;

impl Handler for Broadcast {
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        conn.broadcast(msg);
    }
}

/// The small pubsub text protocol.
pub struct PubSub;

/// One pubsub command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `sub <topic>`.
    Sub(&'a str),
    /// `psub <topic> [<position>]`: subscribe with positions, resuming after the position.
    Psub(&'a str, Option<&'a str>),
    /// `unsub <topic>`.
    Unsub(&'a str),
    /// `pub <topic> <payload>`.
    Pub(&'a str, &'a str),
}

/// Parses one command; `None` if it is not one.
pub fn parse_command(text: &str) -> Option<Command<'_>> {
    let (verb, rest) = text.split_once(' ')?;
    match verb {
        "sub" if !rest.is_empty() && !rest.contains(' ') => Some(Command::Sub(rest)),
        "unsub" if !rest.is_empty() && !rest.contains(' ') => Some(Command::Unsub(rest)),
        "psub" => {
            let mut words = rest.split(' ');
            let topic = words.next().filter(|t| !t.is_empty())?;
            let from = words.next();
            (words.next().is_none() && from != Some("")).then_some(Command::Psub(topic, from))
        }
        "pub" => {
            let (topic, payload) = rest.split_once(' ').unwrap_or((rest, ""));
            (!topic.is_empty()).then_some(Command::Pub(topic, payload))
        }
        _ => None,
    }
}

impl Handler for PubSub {
    /// `ok psub <topic> <replayed>` or `ok psub <topic> gap`; the replay follows.
    fn on_resume(&mut self, conn: &mut Conn<'_>, topic: &str, resume: Resume) {
        if resume.gap {
            conn.send_text(&format!("ok psub {topic} gap"));
        } else {
            conn.send_text(&format!("ok psub {topic} {}", resume.replayed));
        }
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            conn.send_text("error: commands are text: sub|unsub|pub");
            return;
        };
        match parse_command(text) {
            Some(Command::Sub(topic)) => {
                conn.subscribe(topic);
                conn.send_text(&format!("ok sub {topic}"));
            }
            Some(Command::Psub(topic, from)) => psub(conn, topic, from),
            Some(Command::Unsub(topic)) => {
                conn.unsubscribe(topic);
                conn.send_text(&format!("ok unsub {topic}"));
            }
            Some(Command::Pub(topic, payload)) => conn.publish(topic, Message::Text(payload)),
            None => {
                conn.send_text(
                    "error: expected `sub <topic>`, `psub <topic> [<position>]`, `unsub <topic>` \
                     or `pub <topic> <payload>`",
                );
            }
        }
    }
}

/// `psub`: subscribes with positions; `on_resume` answers `ok psub <topic> <replayed>` or
/// `ok psub <topic> gap`, then the replay follows and the subscription is live.
fn psub(conn: &mut Conn<'_>, topic: &str, from: Option<&str>) {
    let from = match from.map(str::parse::<Position>) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            conn.send_text(&format!("error: psub {topic}: {e}"));
            return;
        }
    };
    if !conn.subscribe_from(topic, from) {
        conn.send_text("error: psub needs history (ringws serve --history N)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("sub news"), Some(Command::Sub("news")));
        assert_eq!(parse_command("unsub news"), Some(Command::Unsub("news")));
        assert_eq!(
            parse_command("pub news hello world"),
            Some(Command::Pub("news", "hello world"))
        );
        assert_eq!(parse_command("pub news"), Some(Command::Pub("news", "")));
        assert_eq!(parse_command("sub a b"), None);
        assert_eq!(parse_command("sub "), None);
        assert_eq!(parse_command("hello"), None);
        assert_eq!(
            parse_command("psub news"),
            Some(Command::Psub("news", None))
        );
        assert_eq!(
            parse_command("psub news 1f-3"),
            Some(Command::Psub("news", Some("1f-3")))
        );
        assert_eq!(parse_command("psub news 1f-3 x"), None);
        assert_eq!(parse_command("psub news "), None);
        assert_eq!(parse_command("psub  1-1"), None);
    }
}
