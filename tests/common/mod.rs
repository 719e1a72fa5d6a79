//! A small blocking WebSocket client over std::net, built on the proto client role, and helpers
//! to start servers on free ports.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::Duration;

pub mod redis_server;

use ringws::proto::connection::{Connection, Deflate, Limits, MessageKind, Role, Sink};
use ringws::proto::deflate::{self, Deflater};
use ringws::proto::frame::{self, OpCode};
use ringws::proto::handshake::{self, ClientParsed};
use ringws::{Config, Handler, ServerHandle, WorkerId};

/// A safety net so that a broken server fails a test instead of hanging it (not a timing
/// assertion: nothing is expected to take this long).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
}

/// A client-side sink: the events received, and the frames the core asks to send.
#[derive(Default)]
pub struct Collect {
    pub events: VecDeque<Event>,
    pub out: Vec<u8>,
}

impl Sink for Collect {
    fn message(&mut self, kind: MessageKind, payload: &[u8]) {
        self.events.push_back(match kind {
            MessageKind::Text => Event::Text(String::from_utf8(payload.to_vec()).unwrap()),
            MessageKind::Binary => Event::Binary(payload.to_vec()),
        });
    }
    fn ping(&mut self, payload: &[u8]) {
        self.events.push_back(Event::Ping(payload.to_vec()));
    }
    fn pong(&mut self, payload: &[u8]) {
        self.events.push_back(Event::Pong(payload.to_vec()));
    }
    fn close(&mut self, code: u16, reason: &str) {
        self.events
            .push_back(Event::Close(code, reason.to_string()));
    }
    fn send_frame(&mut self, frame: &[u8]) {
        self.out.extend_from_slice(frame);
    }
}

pub struct Client {
    /// permessage-deflate as the server agreed it (None: not offered, or declined).
    pub deflate: Option<Deflate>,
    /// The raw handshake answer (status line and headers).
    pub response_head: String,
    pub stream: TcpStream,
    core: Connection,
    sink: Collect,
    buf: Vec<u8>,
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        Client::connect_with(addr, "/", &[])
    }

    /// Connects and upgrades, offering permessage-deflate ([`deflate::CLIENT_OFFER`]).
    pub fn connect_deflate(addr: SocketAddr) -> io::Result<Client> {
        let offer = format!("Sec-WebSocket-Extensions: {}", deflate::CLIENT_OFFER);
        Client::connect_with(addr, "/", &[&offer])
    }

    /// Connects and upgrades, with extra request headers (`"Origin: x"`). A
    /// `Sec-WebSocket-Extensions` header among them counts as a permessage-deflate offer.
    pub fn connect_with(addr: SocketAddr, path: &str, headers: &[&str]) -> io::Result<Client> {
        let offered = headers.iter().any(|h| {
            h.to_ascii_lowercase()
                .starts_with("sec-websocket-extensions:")
        });
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let key = handshake::client_key(seed().to_le_bytes().repeat(2).try_into().unwrap());
        let mut req = Vec::new();
        handshake::write_client_request(&mut req, &addr.to_string(), path, &key, None);
        req.truncate(req.len() - 2);
        for h in headers {
            req.extend_from_slice(h.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        stream.write_all(&req)?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (header_len, agreed) = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    String::from_utf8_lossy(&buf).to_string(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            match handshake::parse_response_offering(&buf, &key, 8192, offered) {
                Ok((ClientParsed::Incomplete, _)) => continue,
                Ok((ClientParsed::Accepted { header_len, .. }, agreed)) => {
                    break (header_len, agreed);
                }
                Err(e) => {
                    let text = String::from_utf8_lossy(&buf).to_string();
                    return Err(io::Error::other(format!("{e:?}: {text}")));
                }
            }
        };
        let response_head = String::from_utf8_lossy(&buf[..header_len]).into_owned();
        buf.drain(..header_len);
        let limits = Limits {
            frame_bytes_max: 1 << 30,
            message_bytes_max: 1 << 30,
            message_fragments_max: 1 << 20,
        };
        let mut core = Connection::new(Role::Client, limits, seed());
        core.set_deflate(agreed);
        let mut c = Client {
            deflate: agreed,
            response_head,
            stream,
            core,
            sink: Collect::default(),
            buf: Vec::new(),
        };
        if !buf.is_empty() {
            c.feed(&mut buf)?;
        }
        Ok(c)
    }

    fn feed(&mut self, data: &mut [u8]) -> io::Result<()> {
        let _ = self.core.receive(data, &mut self.sink);
        self.flush_out()
    }

    fn flush_out(&mut self) -> io::Result<()> {
        if !self.sink.out.is_empty() {
            let out = std::mem::take(&mut self.sink.out);
            // The server may already be gone; its answer is what the test checks.
            let _ = self.stream.write_all(&out);
        }
        Ok(())
    }

    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) -> io::Result<()> {
        let mut data = payload.to_vec();
        let mut hdr = [0u8; frame::HEADER_BYTES_MAX];
        let n = self.core.encode_data_header(kind, &mut data, &mut hdr);
        let mut frame = hdr[..n].to_vec();
        frame.extend_from_slice(&data);
        self.stream.write_all(&frame)
    }

    /// Sends a whole message compressed (RSV1), which needs deflate agreed.
    pub fn send_compressed(&mut self, kind: MessageKind, payload: &[u8]) -> io::Result<()> {
        let d = self.deflate.expect("permessage-deflate was not agreed");
        let mut data = Vec::new();
        Deflater::new(6, d.send_window_bits).compress_message(payload, &mut data);
        let mut hdr = [0u8; frame::HEADER_BYTES_MAX];
        let n = self
            .core
            .encode_message_header(kind, true, &mut data, &mut hdr);
        let mut frame = hdr[..n].to_vec();
        frame.extend_from_slice(&data);
        self.stream.write_all(&frame)
    }

    pub fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(MessageKind::Text, text.as_bytes())
    }

    pub fn send_binary(&mut self, data: &[u8]) -> io::Result<()> {
        self.send(MessageKind::Binary, data)
    }

    /// A raw frame, masked with `mask` if given.
    pub fn send_frame(
        &mut self,
        fin: bool,
        op: OpCode,
        payload: &[u8],
        mask: Option<[u8; 4]>,
    ) -> io::Result<()> {
        let mut out = Vec::new();
        frame::encode_frame(&mut out, fin, op, payload, mask);
        self.stream.write_all(&out)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.core.close(code, reason, &mut self.sink);
        self.flush_out()
    }

    /// The next event; `UnexpectedEof` if the server closed TCP first.
    pub fn recv(&mut self) -> io::Result<Event> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(e) = self.sink.events.pop_front() {
                return Ok(e);
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let mut data = std::mem::take(&mut self.buf);
            self.feed(&mut data)?;
        }
    }

    /// Skips data and pings until a Close frame arrives.
    pub fn recv_close(&mut self) -> io::Result<(u16, String)> {
        loop {
            if let Event::Close(code, reason) = self.recv()? {
                return Ok((code, reason));
            }
        }
    }

    /// Whether the server ended TCP (reads until EOF, discarding).
    pub fn read_to_eof(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Sends a raw HTTP request and returns the whole answer (read until the server closes).
pub fn http(addr: SocketAddr, request: &str) -> io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.write_all(request.as_bytes())?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `GET /metrics` and the value of one sample line (`name{labels}` exactly).
pub fn metric(addr: SocketAddr, sample: &str) -> u64 {
    let text = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let line = text
        .lines()
        .find(|l| l.rsplit_once(' ').is_some_and(|(n, _)| n == sample));
    line.unwrap_or_else(|| panic!("no {sample} in {text}"))
        .rsplit_once(' ')
        .unwrap()
        .1
        .parse()
        .unwrap()
}

/// A small test config: one worker, not pinned, small buffers.
pub fn test_config() -> Config {
    Config {
        workers: 1,
        pin_workers: false,
        connections_per_worker_max: 4096,
        recv_buffers_per_worker: 256,
        ring_entries: 1024,
        ..Config::default()
    }
}

pub fn serve<H: Handler>(
    config: Config,
    factory: impl Fn(WorkerId) -> H + Send + Sync + 'static,
) -> ServerHandle {
    ringws::start("127.0.0.1:0".parse().unwrap(), config, factory).expect("server starts")
}

/// The address from the `listening on ws://ADDR` line that a spawned `ringws serve` prints first
/// on its stdout (taken from `child`, which must have been spawned with a piped stdout).
pub fn listen_addr(child: &mut Child) -> SocketAddr {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .unwrap();
    let line = line.trim();
    line.strip_prefix("listening on ws://")
        .or_else(|| line.strip_prefix("listening on wss://"))
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap()
}
