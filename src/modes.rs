//! The handlers behind `ringws serve --mode echo|broadcast|pubsub`.
//!
//! The pubsub text protocol (see docs/PUBSUB.md): `sub <topic>`, `unsub <topic>`,
//! `pub <topic> <payload>`. A subscriber receives `<payload>` as a text message.

use crate::handler::{Conn, Handler, Message};

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
    Sub(&'a str),
    Unsub(&'a str),
    Pub(&'a str, &'a str),
}

/// Parses one command; `None` if it is not one.
pub fn parse_command(text: &str) -> Option<Command<'_>> {
    let (verb, rest) = text.split_once(' ')?;
    match verb {
        "sub" if !rest.is_empty() && !rest.contains(' ') => Some(Command::Sub(rest)),
        "unsub" if !rest.is_empty() && !rest.contains(' ') => Some(Command::Unsub(rest)),
        "pub" => {
            let (topic, payload) = rest.split_once(' ').unwrap_or((rest, ""));
            (!topic.is_empty()).then_some(Command::Pub(topic, payload))
        }
        _ => None,
    }
}

impl Handler for PubSub {
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
            Some(Command::Unsub(topic)) => {
                conn.unsubscribe(topic);
                conn.send_text(&format!("ok unsub {topic}"));
            }
            Some(Command::Pub(topic, payload)) => conn.publish(topic, Message::Text(payload)),
            None => {
                conn.send_text(
                    "error: expected `sub <topic>`, `unsub <topic>` or `pub <topic> <payload>`",
                );
            }
        }
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
    }
}
