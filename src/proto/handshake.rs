//! The HTTP/1.1 upgrade handshake of RFC 6455 §4, sans-IO, in both roles.
//!
//! Server role: [`parse_request`] reads the client's upgrade request in place and hands back
//! borrowed views into the caller's buffer (no allocation); [`write_accept`] writes the
//! `101 Switching Protocols` answer and [`write_reject`] an error answer, both into a
//! caller-supplied buffer.
//!
//! Client role (the load generator): [`client_key`], [`write_client_request`] and
//! [`parse_response`], which checks the server's `Sec-WebSocket-Accept`.
//!
//! Parsing runs in three light steps over the header block: find the blank line that ends it
//! (every `\n` must follow a `\r`: a bare LF is refused with 400), check it is UTF-8 once, then
//! one pass over the header lines. Header names compare case-insensitively; values are trimmed of
//! spaces and tabs. Obsolete line folding, control characters, a header line without a colon and
//! whitespace before the colon are refused with 400.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};
use std::fmt;

/// The GUID a server appends to the client's key before hashing it (RFC 6455 §1.3).
pub const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Version` this crate speaks.
pub const VERSION: &str = "13";

/// Length of a valid `Sec-WebSocket-Key`: base64 of 16 bytes, with `==` padding.
pub const KEY_LEN: usize = 24;

/// Length of a `Sec-WebSocket-Accept` value: base64 of a 20-byte SHA-1 digest.
pub const ACCEPT_LEN: usize = 28;

/// `base64(sha1(key ++ GUID))`, always 28 bytes.
pub fn accept_key(key: &[u8]) -> [u8; ACCEPT_LEN] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let digest = sha.finalize();
    let mut out = [0u8; ACCEPT_LEN];
    let written = STANDARD.encode_slice(digest, &mut out);
    debug_assert_eq!(written, Ok(ACCEPT_LEN));
    out
}

// ---------------------------------------------------------------------------------------------
// Server role: parsing
// ---------------------------------------------------------------------------------------------

/// A parsed upgrade request: borrowed views into the caller's buffer, no allocation.
///
/// Every field has been validated: `key` decodes to 16 bytes, the method was `GET`, the version
/// HTTP/1.1 or later, `Upgrade` held `websocket`, `Connection` held `upgrade` and
/// `Sec-WebSocket-Version` was 13. Values are trimmed of surrounding spaces and tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The request target up to `?`, always starting with `/`; for an absolute-form target
    /// (`http://host/chat`), its path (`/`, if empty).
    pub path: &'a str,
    /// What follows the `?`, without it.
    pub query: Option<&'a str>,
    /// The `Host` header, or the authority of an absolute-form target (RFC 9112 §3.2.2).
    pub host: &'a str,
    pub origin: Option<&'a str>,
    /// The first `Cookie` header.
    pub cookie: Option<&'a str>,
    /// The raw value of the first `Sec-WebSocket-Protocol` header; see [`Request::protocols_iter`].
    pub protocols: Option<&'a str>,
    /// The raw value of the first `Sec-WebSocket-Extensions` header.
    pub extensions: Option<&'a str>,
    /// `Sec-WebSocket-Key`, validated (24 base64 characters decoding to 16 bytes).
    pub key: &'a str,
    /// Bytes of the request, including the final CRLFCRLF. Bytes after it belong to the
    /// WebSocket stream.
    pub header_len: usize,
    /// The header lines (after the request line), each ending in CRLF, without the blank line.
    fields: &'a str,
}

impl<'a> Request<'a> {
    /// The value of the first header called `name` (case-insensitive), trimmed.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.header_all(name).next()
    }

    /// The values of every header called `name` (case-insensitive), in order, trimmed.
    pub fn header_all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header as `(name, value)`, in order, the value trimmed.
    pub fn headers(&self) -> Headers<'a> {
        Headers { rest: self.fields }
    }

    /// The subprotocols the client offered, in order: every comma-separated token of every
    /// `Sec-WebSocket-Protocol` header (RFC 6455 §11.3.4 allows several), trimmed, empty
    /// elements skipped.
    pub fn protocols_iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.header_all("sec-websocket-protocol")
            .flat_map(|v| v.split(','))
            .map(trim_ows)
            .filter(|t| !t.is_empty())
    }
}

/// Iterator over the header lines of a validated [`Request`].
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (line, rest) = next_line(self.rest)?;
        self.rest = rest;
        let (name, value) = line.split_once(':')?;
        Some((name, trim_ows(value)))
    }
}

/// A complete HTTP request that carries no `Upgrade` header at all.
///
/// The runtime serves these on the WebSocket port: `GET /metrics` is answered with the metrics
/// (`write_response(.., 200, ..)`), another method on `/metrics` with 405, and any other path with
/// 426 Upgrade Required (`write_reject(.., 426, ..)`, which names `Upgrade: websocket`), the
/// conventional answer to a plain request at a WebSocket endpoint. The connection is closed after
/// the answer, so a request body (if any) is never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainRequest<'a> {
    /// The method token, as sent (methods are case-sensitive).
    pub method: &'a str,
    /// The request target up to `?`, always starting with `/`.
    pub path: &'a str,
    /// What follows the `?`, without it.
    pub query: Option<&'a str>,
    /// Bytes of the request head, including the final CRLFCRLF.
    pub header_len: usize,
}

/// The outcome of [`parse_request`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The header block is not complete yet: read more and call again with all the bytes.
    Incomplete,
    /// A valid WebSocket upgrade request: answer with [`write_accept`].
    Complete(Request<'a>),
    /// A well-formed request without any `Upgrade` header (e.g. `GET /metrics`).
    Plain(PlainRequest<'a>),
}

/// Why a request is refused; [`Reject::status`] gives the HTTP status to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 400: malformed, or a required header is missing or wrong. The text says which.
    BadRequest(&'static str),
    /// 405: an upgrade request whose method is not `GET`.
    MethodNotAllowed,
    /// 426: `Sec-WebSocket-Version` missing or not 13; the answer carries
    /// `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    /// 431: the header block is longer than `header_bytes_max`.
    HeadersTooLarge,
}

impl Reject {
    /// The HTTP status that answers this refusal.
    pub fn status(self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::MethodNotAllowed => 405,
            Reject::UnsupportedVersion => 426,
            Reject::HeadersTooLarge => 431,
        }
    }

    /// A short text for the answer's body.
    pub fn message(self) -> &'static str {
        match self {
            Reject::BadRequest(why) => why,
            Reject::MethodNotAllowed => "the WebSocket upgrade needs GET",
            Reject::UnsupportedVersion => "Sec-WebSocket-Version 13 required",
            Reject::HeadersTooLarge => "request header block too large",
        }
    }

    /// Writes the whole answer (status, headers, [`Reject::message`] as body) into `out`.
    pub fn write(self, out: &mut [u8]) -> Option<usize> {
        write_reject(out, self.status(), self.message())
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.status())
    }
}

impl std::error::Error for Reject {}

/// Parses the upgrade request at the start of `buf`, in place.
///
/// `buf` holds every byte received so far. The answer is `Incomplete` until the blank line that
/// ends the header block has arrived; if more than `header_bytes_max` bytes arrive without it, or
/// the complete block is longer than that, it is [`Reject::HeadersTooLarge`]. A request without
/// an `Upgrade` header is returned as [`Parsed::Plain`]; one with an `Upgrade` header is either a
/// [`Parsed::Complete`] WebSocket request or a [`Reject`].
///
/// Each call scans from the start of `buf`. A caller fed in small pieces can skip the call when
/// the new bytes contain no `\n` and the total is still within `header_bytes_max`: the answer
/// would be `Incomplete` again.
pub fn parse_request(buf: &[u8], header_bytes_max: usize) -> Result<Parsed<'_>, Reject> {
    let header_len = match find_head_end(buf, header_bytes_max) {
        Ok(Some(len)) => len,
        Ok(None) => return Ok(Parsed::Incomplete),
        Err(HeadError::TooLarge) => return Err(Reject::HeadersTooLarge),
        Err(HeadError::BareLf) => return Err(bad("bare LF line ending")),
    };
    let head = std::str::from_utf8(&buf[..header_len]).map_err(|_| bad("header not UTF-8"))?;
    let (line, fields) = next_line(head).ok_or(bad("empty request"))?;
    let start = parse_request_line(line)?;
    let found = scan_request_fields(fields)?;
    let (path, query) = split_target(start.target);
    if !found.upgrade_seen {
        let method = start.method;
        return Ok(Parsed::Plain(PlainRequest {
            method,
            path,
            query,
            header_len,
        }));
    }
    let checked = check_upgrade(&start, &found)?;
    Ok(Parsed::Complete(Request {
        path,
        query,
        host: checked.host,
        origin: found.origin,
        cookie: found.cookie,
        protocols: found.protocols,
        extensions: found.extensions,
        key: checked.key,
        header_len,
        fields: fields_without_blank_line(fields),
    }))
}

fn bad(why: &'static str) -> Reject {
    Reject::BadRequest(why)
}

/// The request line: `method SP request-target SP HTTP-version`.
struct RequestLine<'a> {
    method: &'a str,
    /// The path and query: the target itself in origin-form, its path in absolute-form.
    target: &'a str,
    /// The authority of an absolute-form target (RFC 9112 §3.2.2).
    authority: Option<&'a str>,
    /// (major, minor)
    version: (u8, u8),
}

fn parse_request_line(line: &str) -> Result<RequestLine<'_>, Reject> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    if !is_token(method) {
        return Err(bad("malformed method"));
    }
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("malformed request target"));
    }
    let (authority, target) = split_absolute_form(target)?;
    let version = parse_http_version(version).ok_or(bad("malformed HTTP version"))?;
    Ok(RequestLine {
        method,
        target,
        authority,
        version,
    })
}

/// Origin-form (`/chat`) → `(None, "/chat")`; absolute-form (`http://host/chat`, RFC 9112
/// §3.2.2, allowed by RFC 6455 §4.1 for `http` and `https`, scheme case-insensitive) →
/// `(Some("host"), "/chat")`. The path of an absolute-form target may be empty (`http://host`,
/// `http://host?q`); [`split_target`] reads an empty path as `/` (RFC 9112 §3.2.1). Any other
/// form is a 400: another scheme, an empty authority, userinfo (`user@`, which RFC 9110 §4.2.4
/// says to treat as an error), or a fragment.
fn split_absolute_form(target: &str) -> Result<(Option<&str>, &str), Reject> {
    if target.starts_with('/') {
        return Ok((None, target));
    }
    let malformed = bad("malformed request target");
    let (scheme, rest) = target.split_once("://").ok_or(malformed)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(bad("request target scheme is not http or https"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') || target.contains('#') {
        return Err(malformed);
    }
    Ok((Some(authority), path_and_query))
}

/// `HTTP/x.y` → `(x, y)`.
fn parse_http_version(s: &str) -> Option<(u8, u8)> {
    match s.strip_prefix("HTTP/")?.as_bytes() {
        [major @ b'0'..=b'9', b'.', minor @ b'0'..=b'9'] => Some((major - b'0', minor - b'0')),
        _ => None,
    }
}

/// Path and query of a target; an empty path (absolute-form only) is `/`.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

/// What the header lines of a request said, collected in one pass.
#[derive(Default)]
struct RequestFields<'a> {
    host: Option<&'a str>,
    origin: Option<&'a str>,
    cookie: Option<&'a str>,
    protocols: Option<&'a str>,
    extensions: Option<&'a str>,
    key: Option<&'a str>,
    version: Option<&'a str>,
    upgrade_seen: bool,
    upgrade_websocket: bool,
    connection_upgrade: bool,
    /// A `Content-Length` above 0 or any `Transfer-Encoding`: the request has a body.
    body: bool,
    /// A `Content-Length` that is not a decimal number.
    content_length_malformed: bool,
}

/// One pass over the header lines (`fields` ends with the blank line).
fn scan_request_fields(fields: &str) -> Result<RequestFields<'_>, Reject> {
    let mut found = RequestFields::default();
    let mut rest = fields;
    while !rest.starts_with("\r\n") {
        let (name, value, next) = scan_field(rest).map_err(bad)?;
        found.add(Field::of(name), value)?;
        rest = next;
    }
    Ok(found)
}

impl<'a> RequestFields<'a> {
    fn add(&mut self, field: Field, value: &'a str) -> Result<(), Reject> {
        match field {
            Field::Host => set_once(&mut self.host, value, bad("duplicate Host"))?,
            Field::Upgrade => {
                self.upgrade_seen = true;
                self.upgrade_websocket |= has_token(value, "websocket");
            }
            Field::Connection => self.connection_upgrade |= has_token(value, "upgrade"),
            Field::Key => set_once(&mut self.key, value, bad("duplicate Sec-WebSocket-Key"))?,
            Field::Version => {
                set_once(
                    &mut self.version,
                    value,
                    bad("duplicate Sec-WebSocket-Version"),
                )?;
            }
            Field::Origin => set_once(&mut self.origin, value, bad("duplicate Origin"))?,
            Field::Cookie => _ = self.cookie.get_or_insert(value),
            Field::Protocol => _ = self.protocols.get_or_insert(value),
            Field::Extensions => _ = self.extensions.get_or_insert(value),
            Field::ContentLength => self.content_length(value),
            Field::TransferEncoding => self.body = true,
            Field::Accept | Field::Other => {}
        }
        Ok(())
    }
}

impl RequestFields<'_> {
    /// `Content-Length = 1*DIGIT` (RFC 9110 §8.6); any digit but 0 means a body.
    fn content_length(&mut self, value: &str) {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            self.content_length_malformed = true;
        } else if value.bytes().any(|b| b != b'0') {
            self.body = true;
        }
    }
}

/// Fills `slot`, or fails with `duplicate` if it was already filled.
fn set_once<'a, E>(slot: &mut Option<&'a str>, value: &'a str, duplicate: E) -> Result<(), E> {
    match slot {
        Some(_) => Err(duplicate),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// The fields an accepted request must have.
struct Checked<'a> {
    host: &'a str,
    key: &'a str,
}

/// RFC 6455 §4.2.1, in this order: method, HTTP version, no body, Host, Upgrade, Connection,
/// Sec-WebSocket-Version (426), Sec-WebSocket-Key.
///
/// An upgrade request must not carry a body (`Content-Length` above 0, any `Transfer-Encoding`,
/// a malformed `Content-Length`: 400): the bytes after its header block are WebSocket frames, and
/// a proxy in front that read them as a body could smuggle a request past its own checks. In
/// absolute-form the host is the target's authority (RFC 9112 §3.2.2), though a `Host` header
/// must still be present (RFC 9112 §3.2).
fn check_upgrade<'a>(
    start: &RequestLine<'a>,
    found: &RequestFields<'a>,
) -> Result<Checked<'a>, Reject> {
    if start.method != "GET" {
        return Err(Reject::MethodNotAllowed);
    }
    if start.version < (1, 1) {
        return Err(bad("HTTP/1.1 or later required"));
    }
    if found.content_length_malformed {
        return Err(bad("malformed Content-Length"));
    }
    if found.body {
        return Err(bad("an upgrade request must not have a body"));
    }
    let host = found
        .host
        .filter(|h| !h.is_empty())
        .ok_or(bad("missing Host"))?;
    let host = start.authority.unwrap_or(host);
    if !found.upgrade_websocket {
        return Err(bad("Upgrade is not websocket"));
    }
    if !found.connection_upgrade {
        return Err(bad("Connection lacks upgrade"));
    }
    if found.version != Some(VERSION) {
        return Err(Reject::UnsupportedVersion);
    }
    let key = found.key.ok_or(bad("missing Sec-WebSocket-Key"))?;
    if !is_valid_key(key) {
        return Err(bad("bad Sec-WebSocket-Key"));
    }
    Ok(Checked { host, key })
}

/// Whether `key` is base64 (with padding) of exactly 16 bytes.
pub fn is_valid_key(key: &str) -> bool {
    // decode_slice wants room for its estimate (18 bytes for 24 characters).
    let mut raw = [0u8; 18];
    key.len() == KEY_LEN && STANDARD.decode_slice(key, &mut raw) == Ok(16)
}

// ---------------------------------------------------------------------------------------------
// Shared by both roles: the header block
// ---------------------------------------------------------------------------------------------

enum HeadError {
    /// A `\n` not preceded by `\r`.
    BareLf,
    /// No blank line within the first `max` bytes, and more than `max` bytes present.
    TooLarge,
}

/// The length of the header block (through the blank line), `None` if it is not complete yet.
fn find_head_end(buf: &[u8], max: usize) -> Result<Option<usize>, HeadError> {
    let window = &buf[..buf.len().min(max)];
    let mut line_start = 0;
    while let Some(offset) = find_lf(&window[line_start..]) {
        let lf = line_start + offset;
        if lf == 0 || window[lf - 1] != b'\r' {
            return Err(HeadError::BareLf);
        }
        if lf - 1 == line_start {
            return Ok(Some(lf + 1));
        }
        line_start = lf + 1;
    }
    if buf.len() > max {
        Err(HeadError::TooLarge)
    } else {
        Ok(None)
    }
}

/// The index of the first `\n` in `hay`, eight bytes at a time.
fn find_lf(hay: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("a chunk of 8")) ^ LFS;
        // The lowest byte that is zero sets the lowest flagged bit (no false positive below it).
        let zeros = word.wrapping_sub(ONES) & !word & HIGHS;
        if zeros != 0 {
            return Some(base + zeros.trailing_zeros() as usize / 8);
        }
        base += 8;
    }
    let tail = chunks.remainder().iter().position(|&b| b == b'\n');
    tail.map(|offset| base + offset)
}

/// Splits off the first CRLF-terminated line (every `\n` of a found head follows a `\r`).
fn next_line(s: &str) -> Option<(&str, &str)> {
    let lf = s.find('\n')?;
    Some((&s[..lf - 1], &s[lf + 1..]))
}

fn fields_without_blank_line(fields: &str) -> &str {
    &fields[..fields.len() - 2]
}

/// Scans the header line `name ":" OWS value OWS CRLF` at the start of `s` in one pass: the name
/// must be a token and the value free of control characters. Returns the name, the trimmed value
/// and what follows the line.
fn scan_field(s: &str) -> Result<(&str, &str, &str), &'static str> {
    let bytes = s.as_bytes();
    let colon = skip_class(bytes, 0, TCHAR);
    match bytes.get(colon) {
        Some(b':') if colon > 0 => {}
        Some(b'\r') => return Err("header line without a colon"),
        _ => return Err("malformed header name"),
    }
    let cr = skip_class(bytes, colon + 1, VALUE);
    if bytes.get(cr..cr + 2) != Some(b"\r\n") {
        return Err("control character in header value");
    }
    Ok((&s[..colon], trim_ows(&s[colon + 1..cr]), &s[cr + 2..]))
}

/// The index of the first byte at or after `from` not in `class`.
fn skip_class(bytes: &[u8], from: usize, class: u8) -> usize {
    let mut i = from;
    while i < bytes.len() && BYTE_CLASS[usize::from(bytes[i])] & class != 0 {
        i += 1;
    }
    i
}

/// A `tchar` of RFC 9110 §5.6.2 (the bytes of a token).
const TCHAR: u8 = 1;
/// A header value byte: HTAB, SP, visible ASCII, and bytes from 0x80 (UTF-8 checked apart).
const VALUE: u8 = 2;

/// The classes of each byte.
const BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        let tchar = byte.is_ascii_alphanumeric() || is_tchar_symbol(byte);
        let value = byte == b'\t' || (byte >= b' ' && byte != 0x7f);
        table[b] = if tchar { TCHAR } else { 0 } | if value { VALUE } else { 0 };
        b += 1;
    }
    table
};

const fn is_tchar_symbol(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'#'
            | b'$'
            | b'%'
            | b'&'
            | b'\''
            | b'*'
            | b'+'
            | b'-'
            | b'.'
            | b'^'
            | b'_'
            | b'`'
            | b'|'
            | b'~'
    )
}

/// A `token` of RFC 9110 §5.6.2, non-empty.
fn is_token(s: &str) -> bool {
    !s.is_empty() && skip_class(s.as_bytes(), 0, TCHAR) == s.len()
}

fn is_value_byte(b: u8) -> bool {
    BYTE_CLASS[usize::from(b)] & VALUE != 0
}

/// Trims optional whitespace. Validated values hold no ASCII whitespace but SP and HTAB, so
/// trimming all ASCII whitespace is the same and faster.
fn trim_ows(s: &str) -> &str {
    s.trim_ascii()
}

/// The header fields the handshake looks at, in both roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Host,
    Upgrade,
    Connection,
    Key,
    Version,
    Origin,
    Cookie,
    Protocol,
    Extensions,
    Accept,
    ContentLength,
    TransferEncoding,
    Other,
}

impl Field {
    /// Classifies a header name, case-insensitively: by length first, then one comparison.
    fn of(name: &str) -> Field {
        let (field, known) = match name.len() {
            4 => (Field::Host, "host"),
            6 if name.as_bytes()[0] | 0x20 == b'o' => (Field::Origin, "origin"),
            6 => (Field::Cookie, "cookie"),
            7 => (Field::Upgrade, "upgrade"),
            10 => (Field::Connection, "connection"),
            14 => (Field::ContentLength, "content-length"),
            17 if name.as_bytes()[0] | 0x20 == b's' => (Field::Key, "sec-websocket-key"),
            17 => (Field::TransferEncoding, "transfer-encoding"),
            20 => (Field::Accept, "sec-websocket-accept"),
            21 => (Field::Version, "sec-websocket-version"),
            22 => (Field::Protocol, "sec-websocket-protocol"),
            24 => (Field::Extensions, "sec-websocket-extensions"),
            _ => return Field::Other,
        };
        if name.eq_ignore_ascii_case(known) {
            field
        } else {
            Field::Other
        }
    }
}

/// Whether the comma-separated list `value` holds `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
}

// ---------------------------------------------------------------------------------------------
// Server role: writing answers
// ---------------------------------------------------------------------------------------------

/// A cursor over a caller-supplied output buffer; every write fails once it is full.
struct Cursor<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> Cursor<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Cursor { out, len: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.out.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    fn put_decimal(&mut self, mut n: usize) -> Option<()> {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[start..])
    }

    fn put_header(&mut self, name: &str, value: &[u8]) -> Option<()> {
        self.put(name.as_bytes())?;
        self.put(b": ")?;
        self.put(value)?;
        self.put(b"\r\n")
    }
}

/// Writes the `101 Switching Protocols` answer to a request whose `Sec-WebSocket-Key` is `key`,
/// with the chosen subprotocol and extensions if any. Returns the bytes written, `None` if `out`
/// is too small (about 130 bytes plus the optional values suffice).
///
/// Returns `None` (nothing usable written) if `out` is too small, or if `protocol` or
/// `extensions` hold a control character: a value chosen by a handler never injects a header
/// and never panics the server.
pub fn write_accept(
    out: &mut [u8],
    key: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
) -> Option<usize> {
    let accept = accept_key(key.as_bytes());
    let mut w = Cursor::new(out);
    w.put(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")?;
    w.put_header("Sec-WebSocket-Accept", &accept)?;
    if let Some(protocol) = protocol {
        header_value_ok(protocol)?;
        w.put_header("Sec-WebSocket-Protocol", protocol.as_bytes())?;
    }
    if let Some(extensions) = extensions {
        header_value_ok(extensions)?;
        w.put_header("Sec-WebSocket-Extensions", extensions.as_bytes())?;
    }
    w.put(b"\r\n")?;
    Some(w.len)
}

/// `Some(())` when `value` can go into a header we send (no control character: no injection).
fn header_value_ok(value: &str) -> Option<()> {
    value.bytes().all(is_value_byte).then_some(())
}

fn assert_header_value(value: &str) {
    assert!(
        header_value_ok(value).is_some(),
        "control character in a header value we send"
    );
}

/// The reason phrase of the statuses this crate sends; empty for others (RFC 9112 allows it).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes an error answer: status line with its reason phrase, `Content-Type: text/plain`,
/// `Content-Length`, `Connection: close` and `body`. 405 adds `Allow: GET`; 426 adds
/// `Upgrade: websocket` and `Sec-WebSocket-Version: 13` (and, since it names `Upgrade`,
/// `Connection: Upgrade, close`). Returns the bytes written, `None` if `out` is too small.
pub fn write_reject(out: &mut [u8], status: u16, body: &str) -> Option<usize> {
    write_response(out, status, "text/plain; charset=utf-8", body.as_bytes())
}

/// Writes a complete HTTP/1.1 answer with `Connection: close` (see [`write_reject`] for the
/// headers added to 405 and 426). The runtime uses it for `200` on `/metrics`.
///
/// Returns `None` if `out` is too small, `status` is not three digits or `content_type` holds a
/// control character.
pub fn write_response(
    out: &mut [u8],
    status: u16,
    content_type: &str,
    body: &[u8],
) -> Option<usize> {
    if !(100..=999).contains(&status) {
        return None;
    }
    header_value_ok(content_type)?;
    let mut w = Cursor::new(out);
    w.put(b"HTTP/1.1 ")?;
    w.put_decimal(usize::from(status))?;
    w.put(b" ")?;
    w.put(reason_phrase(status).as_bytes())?;
    w.put(b"\r\n")?;
    match status {
        405 => w.put(b"Allow: GET\r\nConnection: close\r\n")?,
        426 => w.put(
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nConnection: Upgrade, close\r\n",
        )?,
        _ => w.put(b"Connection: close\r\n")?,
    }
    w.put_header("Content-Type", content_type.as_bytes())?;
    w.put(b"Content-Length: ")?;
    w.put_decimal(body.len())?;
    w.put(b"\r\n\r\n")?;
    w.put(body)?;
    Some(w.len)
}

// ---------------------------------------------------------------------------------------------
// Client role
// ---------------------------------------------------------------------------------------------

/// The `Sec-WebSocket-Key` for 16 random bytes: their base64, 24 bytes.
pub fn client_key(random: [u8; 16]) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    let written = STANDARD.encode_slice(random, &mut out);
    debug_assert_eq!(written, Ok(KEY_LEN));
    out
}

/// Appends the upgrade request for `path` (may carry a `?query`) on `host` to `out`.
///
/// # Panics
/// If `path` does not start with `/` or holds a space or control character, or `host` or
/// `protocols` hold a control character.
pub fn write_client_request(
    out: &mut Vec<u8>,
    host: &str,
    path: &str,
    key: &[u8; KEY_LEN],
    protocols: Option<&str>,
) {
    assert!(
        path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()),
        "request path must be origin-form: {path:?}"
    );
    assert_header_value(host);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(key);
    out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\n");
    if let Some(protocols) = protocols {
        assert_header_value(protocols);
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocols.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The outcome of [`parse_response`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientParsed<'a> {
    /// The header block is not complete yet.
    Incomplete,
    /// The server switched protocols. Bytes after `header_len` are WebSocket frames. The caller
    /// checks that `protocol`, if any, is one it offered (RFC 6455 §4.1).
    Accepted {
        header_len: usize,
        protocol: Option<&'a str>,
    },
}

/// Why the client fails the connection (RFC 6455 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// The status line or a header line is malformed; the text says which.
    Malformed(&'static str),
    /// The header block is longer than `header_bytes_max`.
    TooLarge,
    /// The status is not 101.
    BadStatus(u16),
    /// `Upgrade` is missing or does not hold `websocket`.
    BadUpgrade,
    /// `Connection` is missing or does not hold `upgrade`.
    BadConnection,
    /// `Sec-WebSocket-Accept` is missing.
    MissingAccept,
    /// `Sec-WebSocket-Accept` is not `accept_key(key)`.
    WrongAccept,
    /// `Sec-WebSocket-Extensions` is present, but this client offers no extension.
    UnexpectedExtensions,
    /// `Sec-WebSocket-Extensions` does not accept the permessage-deflate offer validly.
    BadExtensions,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Malformed(why) => write!(f, "malformed handshake response: {why}"),
            ClientError::TooLarge => f.write_str("handshake response header block too large"),
            ClientError::BadStatus(status) => write!(f, "handshake answered with status {status}"),
            ClientError::BadUpgrade => f.write_str("response Upgrade is not websocket"),
            ClientError::BadConnection => f.write_str("response Connection lacks upgrade"),
            ClientError::MissingAccept => f.write_str("response lacks Sec-WebSocket-Accept"),
            ClientError::WrongAccept => f.write_str("wrong Sec-WebSocket-Accept"),
            ClientError::UnexpectedExtensions => f.write_str("extension not offered"),
            ClientError::BadExtensions => f.write_str("invalid permessage-deflate answer"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Parses the server's answer to the request sent with `key` and checks it (RFC 6455 §4.1):
/// status 101, `Upgrade: websocket`, `Connection: upgrade`, `Sec-WebSocket-Accept`, no
/// extension. The status is checked before the headers, so any non-101 answer reports
/// [`ClientError::BadStatus`].
pub fn parse_response<'a>(
    buf: &'a [u8],
    key: &[u8; KEY_LEN],
    header_bytes_max: usize,
) -> Result<ClientParsed<'a>, ClientError> {
    parse_response_offering(buf, key, header_bytes_max, false).map(|(p, _)| p)
}

/// [`parse_response`] for a request that offered permessage-deflate
/// ([`super::deflate::CLIENT_OFFER`]) if `deflate_offered`: the answer may then accept it, and
/// what was agreed comes back beside the result (None: the server declined).
pub fn parse_response_offering<'a>(
    buf: &'a [u8],
    key: &[u8; KEY_LEN],
    header_bytes_max: usize,
    deflate_offered: bool,
) -> Result<(ClientParsed<'a>, Option<super::connection::Deflate>), ClientError> {
    let header_len = match find_head_end(buf, header_bytes_max) {
        Ok(Some(len)) => len,
        Ok(None) => return Ok((ClientParsed::Incomplete, None)),
        Err(HeadError::TooLarge) => return Err(ClientError::TooLarge),
        Err(HeadError::BareLf) => return Err(ClientError::Malformed("bare LF line ending")),
    };
    let head = std::str::from_utf8(&buf[..header_len])
        .map_err(|_| ClientError::Malformed("header not UTF-8"))?;
    let (line, fields) = next_line(head).ok_or(ClientError::Malformed("empty response"))?;
    let status = parse_status_line(line)?;
    if status != 101 {
        return Err(ClientError::BadStatus(status));
    }
    let found = scan_response_fields(fields)?;
    check_response(&found, key)?;
    let deflate = match found.extensions {
        None => None,
        Some(_) if !deflate_offered || found.extensions_count > 1 => {
            return Err(ClientError::UnexpectedExtensions);
        }
        Some(value) => {
            Some(super::deflate::client_accepts(value).ok_or(ClientError::BadExtensions)?)
        }
    };
    let parsed = ClientParsed::Accepted {
        header_len,
        protocol: found.protocol,
    };
    Ok((parsed, deflate))
}

/// `HTTP/1.x SP 3DIGIT [SP reason]` → the status.
fn parse_status_line(line: &str) -> Result<u16, ClientError> {
    let malformed = ClientError::Malformed("malformed status line");
    let (version, rest) = line.split_once(' ').ok_or(malformed)?;
    if parse_http_version(version).is_none_or(|v| v < (1, 1)) {
        return Err(malformed);
    }
    let code = rest.get(..3).ok_or(malformed)?;
    if !code.bytes().all(|b| b.is_ascii_digit())
        || !matches!(rest.as_bytes().get(3), None | Some(b' '))
    {
        return Err(malformed);
    }
    code.parse().map_err(|_| malformed)
}

#[derive(Default)]
struct ResponseFields<'a> {
    upgrade_websocket: bool,
    connection_upgrade: bool,
    accept: Option<&'a str>,
    protocol: Option<&'a str>,
    extensions: Option<&'a str>,
    extensions_count: u32,
}

fn scan_response_fields(fields: &str) -> Result<ResponseFields<'_>, ClientError> {
    let mut found = ResponseFields::default();
    let mut rest = fields;
    while !rest.starts_with("\r\n") {
        let (name, value, next) = scan_field(rest).map_err(ClientError::Malformed)?;
        found.add(Field::of(name), value)?;
        rest = next;
    }
    Ok(found)
}

impl<'a> ResponseFields<'a> {
    fn add(&mut self, field: Field, value: &'a str) -> Result<(), ClientError> {
        let malformed = ClientError::Malformed;
        match field {
            Field::Upgrade => self.upgrade_websocket |= has_token(value, "websocket"),
            Field::Connection => self.connection_upgrade |= has_token(value, "upgrade"),
            Field::Accept => {
                set_once(
                    &mut self.accept,
                    value,
                    malformed("duplicate Sec-WebSocket-Accept"),
                )?;
            }
            Field::Protocol if !is_token(value) => {
                return Err(malformed("Sec-WebSocket-Protocol is not one token"));
            }
            Field::Protocol => {
                set_once(
                    &mut self.protocol,
                    value,
                    malformed("duplicate Sec-WebSocket-Protocol"),
                )?;
            }
            Field::Extensions => {
                self.extensions_count += 1;
                _ = self.extensions.get_or_insert(value);
            }
            _ => {}
        }
        Ok(())
    }
}

fn check_response(found: &ResponseFields<'_>, key: &[u8; KEY_LEN]) -> Result<(), ClientError> {
    if !found.upgrade_websocket {
        return Err(ClientError::BadUpgrade);
    }
    if !found.connection_upgrade {
        return Err(ClientError::BadConnection);
    }
    let accept = found.accept.ok_or(ClientError::MissingAccept)?;
    if accept.as_bytes() != accept_key(key) {
        return Err(ClientError::WrongAccept);
    }
    Ok(())
}
