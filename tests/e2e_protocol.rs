//! Protocol violations get their close codes, and the close handshake is server-first on TCP.
mod common;

use common::{Client, Event, serve, test_config};
use ringws::Config;
use ringws::modes::Echo;
use ringws::proto::frame::OpCode;

const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

#[test]
fn unmasked_frame_is_1002() {
    let server = serve(test_config(), |_| Echo);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_frame(true, OpCode::Text, b"no mask", None).unwrap();
    assert_eq!(c.recv_close().unwrap().0, 1002);
    c.read_to_eof().unwrap();
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn bad_utf8_is_1007_even_across_fragments() {
    let server = serve(test_config(), |_| Echo);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_frame(false, OpCode::Text, b"ok \xce", MASK).unwrap();
    c.send_frame(true, OpCode::Continuation, b"\xff", MASK)
        .unwrap();
    assert_eq!(c.recv_close().unwrap().0, 1007);
    c.read_to_eof().unwrap();
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn over_the_message_limit_is_1009() {
    let config = Config {
        message_bytes_max: 1000,
        frame_bytes_max: 1000,
        ..test_config()
    };
    let server = serve(config, |_| Echo);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_binary(&[7u8; 1000]).unwrap();
    assert_eq!(c.recv().unwrap(), Event::Binary(vec![7u8; 1000]));
    c.send_frame(false, OpCode::Binary, &[1u8; 600], MASK)
        .unwrap();
    c.send_frame(true, OpCode::Continuation, &[1u8; 600], MASK)
        .unwrap();
    assert_eq!(c.recv_close().unwrap().0, 1009);
    c.read_to_eof().unwrap();
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn fragments_and_interleaved_pings_are_reassembled() {
    let server = serve(test_config(), |_| Echo);
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_frame(false, OpCode::Text, b"frag", MASK).unwrap();
    c.send_frame(true, OpCode::Ping, b"p1", MASK).unwrap();
    c.send_frame(false, OpCode::Continuation, b"men", MASK)
        .unwrap();
    c.send_frame(true, OpCode::Continuation, b"ted", MASK)
        .unwrap();
    assert_eq!(c.recv().unwrap(), Event::Pong(b"p1".to_vec()));
    assert_eq!(c.recv().unwrap(), Event::Text("fragmented".into()));
    c.close(1000, "done").unwrap();
    assert_eq!(c.recv_close().unwrap().0, 1000);
    c.read_to_eof().unwrap();
    drop(c);
    server.shutdown();
    server.join().unwrap();
}

#[test]
fn handshake_split_byte_by_byte_and_frames_in_the_same_packet() {
    let server = serve(test_config(), |_| Echo);
    let addr = server.local_addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    let req = "GET /chat?x=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    use std::io::{Read, Write};
    for b in req.as_bytes() {
        s.write_all(&[*b]).unwrap();
    }
    // A masked "hi" right behind the request, in the same write.
    let mut frame = Vec::new();
    ringws::proto::frame::encode_frame(&mut frame, true, OpCode::Text, b"hi", MASK);
    s.write_all(&frame).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.ends_with(&[0x81, 2, b'h', b'i']) {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "server closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
    drop(s);
    server.shutdown();
    server.join().unwrap();
}

/// Closes with 4000 when asked; reports closes.
struct Closer(std::sync::mpsc::Sender<(u16, String)>);

impl ringws::Handler for Closer {
    fn on_message(&mut self, conn: &mut ringws::Conn<'_>, msg: ringws::Message<'_>) {
        if msg == ringws::Message::Text("bye") {
            conn.close(4000, "app close");
            assert!(
                conn.send_text("after close"),
                "queued before the Close frame"
            );
        } else {
            conn.send(msg);
        }
    }
    fn on_close(&mut self, _id: ringws::ConnId, code: u16, reason: &str) {
        let _ = self.0.send((code, reason.to_string()));
    }
}

#[test]
fn handler_close_is_a_clean_close_handshake() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = serve(test_config(), move |_| Closer(tx.clone()));
    let mut c = Client::connect(server.local_addr()).unwrap();
    c.send_text("bye").unwrap();
    assert_eq!(c.recv().unwrap(), Event::Text("after close".into()));
    assert_eq!(c.recv().unwrap(), Event::Close(4000, "app close".into()));
    // Our client core echoed the Close; the server ends TCP first.
    c.read_to_eof().unwrap();
    assert_eq!(rx.recv_timeout(common::READ_TIMEOUT).unwrap().0, 4000);
    drop(c);
    server.shutdown();
    server.join().unwrap();
}
