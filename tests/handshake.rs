//! The upgrade handshake (RFC 6455 §4) through the public API: vectors, browser requests, every
//! refusal with its status, every split point, and the client role against the server role.

use proptest::prelude::*;
use ringws::proto::handshake::*;

const MAX: usize = 8 * 1024;

const CHROME: &str = "GET /chat?room=7&user=ann HTTP/1.1\r\n\
Host: example.com:8080\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=abc123; theme=dark\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
\r\n";

const FIREFOX: &str = "GET /socket HTTP/1.1\r\n\
Host: localhost:9001\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
sec-websocket-version: 13\r\n\
origin: http://localhost:9001\r\n\
sec-websocket-extensions: permessage-deflate\r\n\
sec-websocket-key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
Connection: keep-alive, Upgrade\r\n\
Sec-Fetch-Dest: empty\r\n\
Sec-Fetch-Mode: websocket\r\n\
Sec-Fetch-Site: same-origin\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
Upgrade: websocket\r\n\
\r\n";

/// A minimal valid request with `extra` header lines (each ending in CRLF) inserted, and the
/// lines named in `drop` (by their name, case-sensitive) removed.
fn request_with(extra: &str, drop: &[&str]) -> String {
    let base = [
        "GET / HTTP/1.1",
        "Host: h",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];
    let mut out = String::new();
    for line in base {
        let name = line.split(':').next().unwrap();
        if !drop.contains(&name) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(extra);
    out.push_str("\r\n");
    out
}

fn minimal() -> String {
    request_with("", &[])
}

fn complete(buf: &[u8]) -> Request<'_> {
    match parse_request(buf, MAX) {
        Ok(Parsed::Complete(req)) => req,
        other => panic!("expected Complete, got {other:?}"),
    }
}

fn reject_status(buf: &str) -> u16 {
    match parse_request(buf.as_bytes(), MAX) {
        Err(reject) => reject.status(),
        Ok(other) => panic!("expected a reject for {buf:?}, got {other:?}"),
    }
}

fn response_text(len: Option<usize>, out: &[u8]) -> &str {
    std::str::from_utf8(&out[..len.expect("buffer large enough")]).unwrap()
}

// ------------------------------------------------------------------ accept key

#[test]
fn rfc6455_accept_vector() {
    assert_eq!(
        &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn accept_key_depends_on_key() {
    assert_ne!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        accept_key(b"x3JJHMbDL1EzLkh9GBhXDw==")
    );
    // Vector from the websockets/ws test suite and Wikipedia.
    assert_eq!(
        &accept_key(b"x3JJHMbDL1EzLkh9GBhXDw=="),
        b"HSmrc0sMlYUkAGmm5OPpG2HaGWk="
    );
}

#[test]
fn is_valid_key_checks_length_and_alphabet() {
    assert!(is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
    assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZQ")); // no padding
    assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZQ=")); // 23 chars
    assert!(!is_valid_key("dGhlIHNhbXBsZSBub25j")); // 15 bytes, 20 chars
    assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZ2U=")); // 17 bytes
    assert!(!is_valid_key("dGhlIHNhbXBsZSBub25j!Q==")); // not base64
}

// ------------------------------------------------------------------ accepted requests

#[test]
fn chrome_like_request_is_accepted_with_its_fields() {
    let req = complete(CHROME.as_bytes());
    assert_eq!(req.path, "/chat");
    assert_eq!(req.query, Some("room=7&user=ann"));
    assert_eq!(req.host, "example.com:8080");
    assert_eq!(req.origin, Some("https://example.com"));
    assert_eq!(req.cookie, Some("session=abc123; theme=dark"));
    assert_eq!(req.protocols, Some("chat, superchat"));
    assert_eq!(
        req.extensions,
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(req.key, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_eq!(req.header_len, CHROME.len());
    assert_eq!(
        req.protocols_iter().collect::<Vec<_>>(),
        ["chat", "superchat"]
    );
    assert_eq!(req.header("pragma"), Some("no-cache"));
    assert_eq!(req.header("ACCEPT-LANGUAGE"), Some("en-US,en;q=0.9"));
    assert_eq!(req.header("x-absent"), None);
    assert_eq!(req.headers().count(), CHROME.matches("\r\n").count() - 2);
    assert_eq!(req.headers().next(), Some(("Host", "example.com:8080")));
    assert_eq!(
        req.headers().last(),
        Some(("Sec-WebSocket-Protocol", "chat, superchat"))
    );
}

#[test]
fn firefox_like_request_is_accepted_with_its_fields() {
    let req = complete(FIREFOX.as_bytes());
    assert_eq!(req.path, "/socket");
    assert_eq!(req.query, None);
    assert_eq!(req.host, "localhost:9001");
    assert_eq!(req.origin, Some("http://localhost:9001"));
    assert_eq!(req.cookie, None);
    assert_eq!(req.protocols, None);
    assert_eq!(req.protocols_iter().count(), 0);
    assert_eq!(req.extensions, Some("permessage-deflate"));
    assert_eq!(req.key, "x3JJHMbDL1EzLkh9GBhXDw==");
    assert_eq!(req.header("Connection"), Some("keep-alive, Upgrade"));
    assert_eq!(req.header_len, FIREFOX.len());
}

#[test]
fn bytes_after_the_head_are_not_part_of_it() {
    let mut buf = minimal().into_bytes();
    let head = buf.len();
    buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(complete(&buf).header_len, head);
}

#[test]
fn whitespace_and_case_are_tolerated() {
    let req = "GET /x HTTP/1.1\r\n\
HOST:\t  h.example \r\n\
upgrade:WebSocket\r\n\
CONNECTION: keep-alive ,  UPGRADE \t\r\n\
sec-websocket-key:   dGhlIHNhbXBsZSBub25jZQ==\t\r\n\
SEC-WEBSOCKET-VERSION:13\r\n\r\n";
    let parsed = complete(req.as_bytes());
    assert_eq!(parsed.host, "h.example");
    assert_eq!(parsed.key, "dGhlIHNhbXBsZSBub25jZQ==");
}

#[test]
fn upgrade_may_be_a_list() {
    let req = request_with("Upgrade: h2c, websocket\r\n", &["Upgrade"]);
    complete(req.as_bytes());
}

#[test]
fn later_http_minor_versions_are_accepted() {
    let req = minimal().replace("HTTP/1.1", "HTTP/1.2");
    complete(req.as_bytes());
}

#[test]
fn protocols_from_several_headers_are_all_listed() {
    let extra = "Sec-WebSocket-Protocol: a, ,b\r\nSec-WebSocket-Protocol:  c \r\n";
    let req = request_with(extra, &[]);
    let parsed = complete(req.as_bytes());
    assert_eq!(parsed.protocols, Some("a, ,b"));
    assert_eq!(parsed.protocols_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(parsed.header_all("sec-websocket-protocol").count(), 2);
}

#[test]
fn utf8_in_a_cookie_is_kept() {
    let req = request_with("Cookie: name=Zoë\r\n", &[]);
    assert_eq!(complete(req.as_bytes()).cookie, Some("name=Zoë"));
}

// ------------------------------------------------------------------ plain requests

#[test]
fn plain_get_metrics_is_reported_as_plain() {
    let req = "GET /metrics?x=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n";
    let parsed = parse_request(req.as_bytes(), MAX).unwrap();
    let expected = PlainRequest {
        method: "GET",
        path: "/metrics",
        query: Some("x=1"),
        header_len: req.len(),
    };
    assert_eq!(parsed, Parsed::Plain(expected));
}

#[test]
fn plain_request_keeps_its_method_and_may_be_http10() {
    let req = "POST /other HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc";
    match parse_request(req.as_bytes(), MAX).unwrap() {
        Parsed::Plain(plain) => {
            assert_eq!(plain.method, "POST");
            assert_eq!(plain.path, "/other");
            assert_eq!(plain.query, None);
            assert_eq!(plain.header_len, req.len() - 3);
        }
        other => panic!("expected Plain, got {other:?}"),
    }
}

#[test]
fn plain_request_must_still_be_well_formed() {
    assert_eq!(
        reject_status("GET /metrics HTTP/1.1\r\nno colon\r\n\r\n"),
        400
    );
    assert_eq!(reject_status("GET metrics HTTP/1.1\r\n\r\n"), 400);
}

#[test]
fn upgrade_without_websocket_is_400_not_plain() {
    let req = request_with("Upgrade: h2c\r\n", &["Upgrade"]);
    assert_eq!(reject_status(&req), 400);
}

// ------------------------------------------------------------------ refusals

#[test]
fn post_is_405() {
    let req = minimal().replacen("GET", "POST", 1);
    assert_eq!(
        parse_request(req.as_bytes(), MAX),
        Err(Reject::MethodNotAllowed)
    );
    assert_eq!(reject_status(&req), 405);
}

#[test]
fn lowercase_get_is_405() {
    // Methods are case-sensitive.
    assert_eq!(reject_status(&minimal().replacen("GET", "get", 1)), 405);
}

#[test]
fn http10_is_400() {
    assert_eq!(
        reject_status(&minimal().replace("HTTP/1.1", "HTTP/1.0")),
        400
    );
}

#[test]
fn junk_versions_are_400() {
    for version in [
        "HTTP/1",
        "HTTP/11",
        "HTTP/x.y",
        "http/1.1",
        "HTTP/1.1 ",
        "FOO",
        "HTTP/1.10",
    ] {
        let req = minimal().replacen("HTTP/1.1", version, 1);
        assert_eq!(reject_status(&req), 400, "{version:?}");
    }
}

#[test]
fn missing_host_is_400() {
    assert_eq!(reject_status(&request_with("", &["Host"])), 400);
}

#[test]
fn empty_host_is_400() {
    assert_eq!(reject_status(&request_with("Host:  \r\n", &["Host"])), 400);
}

#[test]
fn duplicate_host_is_400() {
    assert_eq!(reject_status(&request_with("Host: other\r\n", &[])), 400);
}

#[test]
fn missing_upgrade_token_is_400() {
    let req = request_with("Upgrade: websockets\r\n", &["Upgrade"]);
    assert_eq!(reject_status(&req), 400);
    let req = request_with("Upgrade:\r\n", &["Upgrade"]);
    assert_eq!(reject_status(&req), 400);
}

#[test]
fn missing_connection_upgrade_is_400() {
    assert_eq!(reject_status(&request_with("", &["Connection"])), 400);
    let req = request_with("Connection: keep-alive\r\n", &["Connection"]);
    assert_eq!(reject_status(&req), 400);
    let req = request_with("Connection: upgraded\r\n", &["Connection"]);
    assert_eq!(reject_status(&req), 400);
}

#[test]
fn missing_key_is_400() {
    assert_eq!(
        reject_status(&request_with("", &["Sec-WebSocket-Key"])),
        400
    );
}

#[test]
fn bad_keys_are_400() {
    let keys = [
        "",                             // empty
        "dGhlIHNhbXBsZSBub25jZQ",       // no padding
        "dGhlIHNhbXBsZSBub25jZQ===",    // 25 chars
        "dGhlIHNhbXBsZSBub25jZQ=",      // 23 chars
        "dGhlIHNhbXBsZSBub25jZQ==AAAA", // 28 chars
        "AAAAAAAAAAAAAAAAAAAA",         // 15 bytes
        "AAAAAAAAAAAAAAAAAAAAAAA=",     // 17 bytes, 24 chars
        "AAAAAAAAAAAAAAAAAAAAAA==AA",   // 16 bytes + junk
        "dGhlIHNhbXBsZSBub25jZQ*=",     // not base64
        "dGhlIHNhbXBsZSBub2 5jZQ=",     // inner space
    ];
    for key in keys {
        let line = format!("Sec-WebSocket-Key: {key}\r\n");
        let req = request_with(&line, &["Sec-WebSocket-Key"]);
        assert_eq!(reject_status(&req), 400, "key {key:?}");
    }
}

#[test]
fn duplicate_key_is_400() {
    let dup = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    assert_eq!(reject_status(&request_with(dup, &[])), 400);
}

#[test]
fn duplicate_origin_is_400() {
    let dup = "Origin: https://a\r\nOrigin: https://b\r\n";
    assert_eq!(reject_status(&request_with(dup, &[])), 400);
}

#[test]
fn malformed_lines_are_400() {
    let cases = [
        "GET / HTTP/1.1\r\nHost h\r\n\r\n".to_string(), // no colon
        request_with("X-Foo : bar\r\n", &[]),           // space before colon
        request_with(": bar\r\n", &[]),                 // empty name
        request_with("X Foo: bar\r\n", &[]),            // space in name
        request_with("X-Foo: b\x01ar\r\n", &[]),        // control char
        request_with("X-Foo: b\x7far\r\n", &[]),        // DEL
        request_with("X-Foo: b\rar\r\n", &[]),          // bare CR
        request_with("X-Foo: a\r\n  folded\r\n", &[]),  // obs-fold
        minimal().replacen("GET / ", "GET  / ", 1),     // double space
        minimal().replacen("GET / ", "GET /a b ", 1),   // space in target
        minimal().replacen("GET / ", "G(T / ", 1),      // not a token
        minimal().replacen("GET / HTTP/1.1", "GET /", 1), // two parts
        format!("\r\n{}", minimal()),                   // empty request line
    ];
    for req in cases {
        assert_eq!(reject_status(&req), 400, "{req:?}");
    }
}

// ------------------------------------------------------------------ strict HTTP (#16)

fn with_target(target: &str) -> String {
    minimal().replacen("GET / ", &format!("GET {target} "), 1)
}

#[test]
fn absolute_form_target_is_accepted_with_its_path() {
    let req = with_target("http://example.com/chat");
    let req = complete(req.as_bytes());
    assert_eq!((req.path, req.query), ("/chat", None));
    // RFC 9112 §3.2.2: the authority of the target is the host, not the Host header ("h").
    assert_eq!(req.host, "example.com");
    let req = with_target("HTTPS://example.com:8443/a/b?room=7");
    let req = complete(req.as_bytes());
    assert_eq!((req.path, req.query), ("/a/b", Some("room=7")));
    assert_eq!(req.host, "example.com:8443");
}

#[test]
fn absolute_form_with_an_empty_path_is_slash() {
    let req = with_target("http://example.com");
    assert_eq!(complete(req.as_bytes()).path, "/");
    let req = with_target("http://example.com?x=1");
    let req = complete(req.as_bytes());
    assert_eq!((req.path, req.query), ("/", Some("x=1")));
}

#[test]
fn origin_form_keeps_the_host_header() {
    let req = minimal();
    assert_eq!(complete(req.as_bytes()).host, "h");
}

#[test]
fn other_request_target_forms_are_400() {
    for target in [
        "ws://example.com/chat",    // RFC 6455 §4.1: http or https only
        "ftp://example.com/",       // another scheme
        "http:///chat",             // empty authority
        "http://user@example.com/", // userinfo (RFC 9110 §4.2.4)
        "http://example.com/#frag", // a fragment is never sent
        "example.com:80",           // authority-form is for CONNECT
        "*",                        // asterisk-form is for OPTIONS
        "chat",                     // relative without a slash
    ] {
        let req = with_target(target);
        assert_eq!(
            parse_request(req.as_bytes(), MAX),
            Err(Reject::BadRequest(match target {
                "ws://example.com/chat" | "ftp://example.com/" => {
                    "request target scheme is not http or https"
                }
                _ => "malformed request target",
            })),
            "{target}"
        );
    }
}

#[test]
fn absolute_form_still_needs_a_host_header() {
    let req = request_with("", &["Host"]).replacen("GET / ", "GET http://example.com/ ", 1);
    assert_eq!(
        parse_request(req.as_bytes(), MAX),
        Err(Reject::BadRequest("missing Host"))
    );
}

#[test]
fn upgrade_with_a_body_is_400() {
    let body = Err(Reject::BadRequest(
        "an upgrade request must not have a body",
    ));
    for extra in [
        "Content-Length: 5\r\n",
        "content-length: 0001\r\n",
        "Content-Length: 0\r\nContent-Length: 7\r\n",
        "Transfer-Encoding: chunked\r\n",
        "transfer-encoding: identity\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding:\r\n",
    ] {
        let req = request_with(extra, &[]);
        assert_eq!(parse_request(req.as_bytes(), MAX), body, "{extra:?}");
        assert_eq!(reject_status(&req), 400);
    }
}

#[test]
fn malformed_content_length_is_400() {
    for extra in [
        "Content-Length: -1\r\n",
        "Content-Length: 1 2\r\n",
        "Content-Length: 0x10\r\n",
        "Content-Length:\r\n",
        "Content-Length: 0, 0\r\n",
    ] {
        let req = request_with(extra, &[]);
        assert_eq!(
            parse_request(req.as_bytes(), MAX),
            Err(Reject::BadRequest("malformed Content-Length")),
            "{extra:?}"
        );
    }
}

#[test]
fn upgrade_with_content_length_zero_is_accepted() {
    for extra in ["Content-Length: 0\r\n", "Content-Length: 000\r\n"] {
        let req = request_with(extra, &[]);
        complete(req.as_bytes());
    }
}

#[test]
fn a_body_is_checked_before_the_upgrade_headers_but_after_the_method() {
    // POST with a body is still 405 (the method is checked first) ...
    let req = request_with("Content-Length: 3\r\n", &[]).replacen("GET", "POST", 1);
    assert_eq!(reject_status(&req), 405);
    // ... and a body is a 400 even when the version is wrong (426 otherwise).
    let req = request_with(
        "Transfer-Encoding: chunked\r\nSec-WebSocket-Version: 8\r\n",
        &["Sec-WebSocket-Version"],
    );
    assert_eq!(reject_status(&req), 400);
}

#[test]
fn a_plain_request_may_have_a_body() {
    // Answered (426 or /metrics) and closed: its body is never read as frames.
    let req = "POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc";
    assert!(matches!(
        parse_request(req.as_bytes(), MAX),
        Ok(Parsed::Plain(_))
    ));
}

#[test]
fn bare_lf_is_400() {
    let req = minimal().replace("\r\n", "\n");
    assert_eq!(reject_status(&req), 400);
    let req = minimal().replacen("Host: h\r\n", "Host: h\n", 1);
    assert_eq!(reject_status(&req), 400);
    // Also before the head is complete.
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\n", MAX),
        Err(Reject::BadRequest("bare LF line ending"))
    );
}

#[test]
fn non_utf8_is_400() {
    let mut req = request_with("Cookie: a=\u{e9}\r\n", &[]).into_bytes();
    let at = req.iter().position(|&b| b == 0xc3).unwrap();
    req[at] = 0xff;
    assert!(matches!(
        parse_request(&req, MAX),
        Err(Reject::BadRequest(_))
    ));
}

#[test]
fn version_8_is_426() {
    let req = request_with("Sec-WebSocket-Version: 8\r\n", &["Sec-WebSocket-Version"]);
    assert_eq!(
        parse_request(req.as_bytes(), MAX),
        Err(Reject::UnsupportedVersion)
    );
    assert_eq!(reject_status(&req), 426);
}

#[test]
fn missing_version_is_426() {
    assert_eq!(
        reject_status(&request_with("", &["Sec-WebSocket-Version"])),
        426
    );
}

#[test]
fn version_list_is_426() {
    let req = request_with(
        "Sec-WebSocket-Version: 13, 8\r\n",
        &["Sec-WebSocket-Version"],
    );
    assert_eq!(reject_status(&req), 426);
}

#[test]
fn headers_over_the_limit_are_431_complete() {
    let req = minimal();
    let len = req.len();
    assert!(matches!(
        parse_request(req.as_bytes(), len),
        Ok(Parsed::Complete(_))
    ));
    assert_eq!(
        parse_request(req.as_bytes(), len - 1),
        Err(Reject::HeadersTooLarge)
    );
    let padding = format!("X-Pad: {}\r\n", "a".repeat(MAX));
    assert_eq!(reject_status(&request_with(&padding, &[])), 431);
}

#[test]
fn headers_over_the_limit_are_431_incomplete() {
    let mut buf = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    buf.resize(MAX, b'a');
    assert_eq!(parse_request(&buf, MAX), Ok(Parsed::Incomplete));
    buf.push(b'a');
    assert_eq!(parse_request(&buf, MAX), Err(Reject::HeadersTooLarge));
}

#[test]
fn reject_status_and_message() {
    assert_eq!(Reject::BadRequest("x").status(), 400);
    assert_eq!(Reject::BadRequest("x").message(), "x");
    assert_eq!(Reject::MethodNotAllowed.status(), 405);
    assert_eq!(Reject::UnsupportedVersion.status(), 426);
    assert_eq!(Reject::HeadersTooLarge.status(), 431);
}

// ------------------------------------------------------------------ split points

#[test]
fn every_prefix_is_incomplete_until_the_last_byte() {
    for req in [CHROME, FIREFOX, minimal().as_str()] {
        let bytes = req.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(
                parse_request(&bytes[..cut], MAX),
                Ok(Parsed::Incomplete),
                "cut {cut}"
            );
        }
        assert_eq!(complete(bytes).header_len, bytes.len());
    }
}

// ------------------------------------------------------------------ writing answers

#[test]
fn accept_answer_is_exact() {
    let mut out = [0u8; 256];
    let len = write_accept(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", None, None);
    assert_eq!(
        response_text(len, &out),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
}

#[test]
fn accept_answer_with_protocol_and_extensions() {
    let mut out = [0u8; 256];
    let len = write_accept(
        &mut out,
        "dGhlIHNhbXBsZSBub25jZQ==",
        Some("chat"),
        Some("x-ext"),
    );
    let text = response_text(len, &out);
    assert!(text.ends_with(
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\
Sec-WebSocket-Extensions: x-ext\r\n\r\n"
    ));
}

#[test]
fn accept_answer_fails_when_out_is_small() {
    let mut out = [0u8; 256];
    let needed = write_accept(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", Some("chat"), None).unwrap();
    for size in 0..needed {
        let mut small = vec![0u8; size];
        assert_eq!(
            write_accept(&mut small, "dGhlIHNhbXBsZSBub25jZQ==", Some("chat"), None),
            None
        );
    }
    let mut exact = vec![0u8; needed];
    assert_eq!(
        write_accept(&mut exact, "dGhlIHNhbXBsZSBub25jZQ==", Some("chat"), None),
        Some(needed)
    );
}

#[test]
fn accept_answer_refuses_header_injection() {
    let mut out = [0u8; 256];
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    assert_eq!(
        write_accept(&mut out, key, Some("chat\r\nX-Evil: 1"), None),
        None
    );
    assert_eq!(write_accept(&mut out, key, None, Some("x\ny")), None);
    assert!(write_accept(&mut out, key, Some("chat"), None).is_some());
    assert_eq!(
        write_response(&mut out, 200, "text/plain\r\nX: 1", b""),
        None
    );
    assert_eq!(write_response(&mut out, 1000, "text/plain", b""), None);
}

/// Splits an answer into its status line, its header lines and its body.
fn split_answer(text: &str) -> (&str, Vec<&str>, &str) {
    let (head, body) = text.split_once("\r\n\r\n").expect("a blank line");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap();
    (status, lines.collect(), body)
}

#[test]
fn reject_answers_have_status_reason_and_headers() {
    let cases = [
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (426, "Upgrade Required"),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
    ];
    for (status, reason) in cases {
        let mut out = [0u8; 512];
        let len = write_reject(&mut out, status, "nope");
        let (line, headers, body) = split_answer(response_text(len, &out));
        assert_eq!(line, format!("HTTP/1.1 {status} {reason}"));
        assert!(
            headers.contains(&"Content-Type: text/plain; charset=utf-8"),
            "{headers:?}"
        );
        assert!(headers.contains(&"Content-Length: 4"), "{headers:?}");
        assert!(
            headers
                .iter()
                .any(|h| h.starts_with("Connection:") && h.ends_with("close"))
        );
        assert_eq!(body, "nope");
        let has_version = headers.contains(&"Sec-WebSocket-Version: 13");
        assert_eq!(has_version, status == 426, "{status}");
        assert_eq!(
            headers.contains(&"Upgrade: websocket"),
            status == 426,
            "{status}"
        );
        assert_eq!(headers.contains(&"Allow: GET"), status == 405, "{status}");
    }
}

#[test]
fn reject_426_answer_names_version_13() {
    let req = request_with("Sec-WebSocket-Version: 8\r\n", &["Sec-WebSocket-Version"]);
    let reject = parse_request(req.as_bytes(), MAX).unwrap_err();
    let mut out = [0u8; 512];
    let len = reject.write(&mut out);
    let (line, headers, body) = split_answer(response_text(len, &out));
    assert_eq!(line, "HTTP/1.1 426 Upgrade Required");
    assert!(headers.contains(&"Sec-WebSocket-Version: 13"));
    assert!(headers.contains(&"Connection: Upgrade, close"));
    assert_eq!(body, reject.message());
}

#[test]
fn reject_answer_content_length_counts_bytes() {
    let mut out = [0u8; 512];
    let body = "é".repeat(60); // 120 bytes
    let len = write_reject(&mut out, 400, &body);
    let (_, headers, got) = split_answer(response_text(len, &out));
    assert!(headers.contains(&"Content-Length: 120"));
    assert_eq!(got, body);
}

#[test]
fn reject_answer_fails_when_out_is_small() {
    let mut out = [0u8; 512];
    let needed = write_reject(&mut out, 426, "upgrade").unwrap();
    assert_eq!(write_reject(&mut out[..needed - 1], 426, "upgrade"), None);
    assert_eq!(
        write_reject(&mut out[..needed], 426, "upgrade"),
        Some(needed)
    );
}

#[test]
fn response_for_metrics() {
    let mut out = [0u8; 512];
    let len = write_response(&mut out, 200, "text/plain; version=0.0.4", b"up 1\n");
    let (line, headers, body) = split_answer(response_text(len, &out));
    assert_eq!(line, "HTTP/1.1 200 OK");
    assert!(headers.contains(&"Content-Type: text/plain; version=0.0.4"));
    assert!(headers.contains(&"Content-Length: 5"));
    assert_eq!(body, "up 1\n");
}

#[test]
fn unknown_status_has_an_empty_reason() {
    let mut out = [0u8; 512];
    let len = write_reject(&mut out, 418, "");
    let (line, _, _) = split_answer(response_text(len, &out));
    assert_eq!(line, "HTTP/1.1 418 ");
}

// ------------------------------------------------------------------ client role

const RANDOM: [u8; 16] = *b"the sample nonce";

#[test]
fn client_key_is_base64_of_the_random_bytes() {
    assert_eq!(&client_key(RANDOM), b"dGhlIHNhbXBsZSBub25jZQ==");
    assert!(is_valid_key(
        std::str::from_utf8(&client_key([0xff; 16])).unwrap()
    ));
}

/// Client request → server parser → 101 → client check.
#[test]
fn client_and_server_agree() {
    let key = client_key(RANDOM);
    let mut request = Vec::new();
    write_client_request(
        &mut request,
        "example.com:80",
        "/feed?x=1",
        &key,
        Some("chat, v2"),
    );
    let req = complete(&request);
    assert_eq!(
        (req.path, req.query, req.host),
        ("/feed", Some("x=1"), "example.com:80")
    );
    assert_eq!(req.key.as_bytes(), &key);
    assert_eq!(req.protocols_iter().collect::<Vec<_>>(), ["chat", "v2"]);
    let mut out = [0u8; 512];
    let len = write_accept(&mut out, req.key, Some("v2"), None).unwrap();
    let mut stream = out[..len].to_vec();
    stream.extend_from_slice(&[0x81, 0x00]); // a first frame right behind the head
    let parsed = parse_response(&stream, &key, MAX);
    assert_eq!(
        parsed,
        Ok(ClientParsed::Accepted {
            header_len: len,
            protocol: Some("v2")
        })
    );
}

#[test]
fn client_request_without_protocols() {
    let key = client_key(RANDOM);
    let mut request = Vec::new();
    write_client_request(&mut request, "h", "/", &key, None);
    let req = complete(&request);
    assert_eq!(req.protocols, None);
    let mut out = [0u8; 512];
    let len = write_accept(&mut out, req.key, None, None).unwrap();
    let parsed = parse_response(&out[..len], &key, MAX);
    assert_eq!(
        parsed,
        Ok(ClientParsed::Accepted {
            header_len: len,
            protocol: None
        })
    );
}

#[test]
fn client_response_every_prefix_is_incomplete() {
    let key = client_key(RANDOM);
    let mut out = [0u8; 512];
    let len = write_accept(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", None, None).unwrap();
    for cut in 0..len {
        assert_eq!(
            parse_response(&out[..cut], &key, MAX),
            Ok(ClientParsed::Incomplete),
            "cut {cut}"
        );
    }
}

fn accepted_with(replace: (&str, &str)) -> String {
    let mut out = [0u8; 512];
    let len = write_accept(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", None, None).unwrap();
    let text = std::str::from_utf8(&out[..len]).unwrap();
    assert!(
        text.contains(replace.0),
        "{:?} not in the answer",
        replace.0
    );
    text.replacen(replace.0, replace.1, 1)
}

fn client_error(response: &str) -> ClientError {
    match parse_response(response.as_bytes(), &client_key(RANDOM), MAX) {
        Err(e) => e,
        Ok(other) => panic!("expected an error for {response:?}, got {other:?}"),
    }
}

#[test]
fn client_rejects_wrong_accept() {
    let wrong = accepted_with((
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        "HSmrc0sMlYUkAGmm5OPpG2HaGWk=",
    ));
    assert_eq!(client_error(&wrong), ClientError::WrongAccept);
    let key = client_key(*b"another nonce!!!");
    let mut out = [0u8; 512];
    let len = write_accept(&mut out, "dGhlIHNhbXBsZSBub25jZQ==", None, None).unwrap();
    assert_eq!(
        parse_response(&out[..len], &key, MAX),
        Err(ClientError::WrongAccept)
    );
}

#[test]
fn client_rejects_missing_accept() {
    let missing = accepted_with(("Sec-WebSocket-Accept", "X-Other"));
    assert_eq!(client_error(&missing), ClientError::MissingAccept);
}

#[test]
fn client_rejects_non_101() {
    let mut out = [0u8; 512];
    for status in [200, 400, 403, 426, 503] {
        let len = write_reject(&mut out, status, "no").unwrap();
        let text = std::str::from_utf8(&out[..len]).unwrap();
        assert_eq!(client_error(text), ClientError::BadStatus(status));
    }
    let moved = "HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\n\r\n";
    assert_eq!(client_error(moved), ClientError::BadStatus(301));
}

#[test]
fn client_rejects_bad_upgrade_and_connection() {
    assert_eq!(
        client_error(&accepted_with(("Upgrade: websocket\r\n", ""))),
        ClientError::BadUpgrade
    );
    let wrong = accepted_with(("Upgrade: websocket", "Upgrade: h2c"));
    assert_eq!(client_error(&wrong), ClientError::BadUpgrade);
    let none = accepted_with(("Connection: Upgrade\r\n", ""));
    assert_eq!(client_error(&none), ClientError::BadConnection);
    let wrong = accepted_with(("Connection: Upgrade", "Connection: close"));
    assert_eq!(client_error(&wrong), ClientError::BadConnection);
}

#[test]
fn client_rejects_extensions_it_did_not_offer() {
    let ext = accepted_with((
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
    ));
    assert_eq!(client_error(&ext), ClientError::UnexpectedExtensions);
}

#[test]
fn client_rejects_malformed_responses() {
    let cases = [
        accepted_with(("HTTP/1.1 101", "HTTP/1.0 101")),
        accepted_with(("HTTP/1.1 101", "HTTP/1.1 1O1")),
        accepted_with(("HTTP/1.1 101 ", "HTTP/1.1 1010")),
        accepted_with(("HTTP/1.1 101 Switching Protocols", "HTTP/1.1")),
        accepted_with(("Upgrade: websocket", "Upgrade websocket")),
        accepted_with(("\r\n\r\n", "\r\nSec-WebSocket-Protocol: a, b\r\n\r\n")),
        accepted_with((
            "\r\n\r\n",
            "\r\nSec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: a\r\n\r\n",
        )),
        accepted_with(("\r\n\r\n", "\r\nSec-WebSocket-Accept: x\r\n\r\n")),
    ];
    for response in cases {
        assert!(
            matches!(client_error(&response), ClientError::Malformed(_)),
            "{response:?}"
        );
    }
    assert!(matches!(
        client_error(&accepted_with(("\r\n", "\n"))),
        ClientError::Malformed(_)
    ));
}

#[test]
fn client_status_without_reason_is_fine() {
    let bare = accepted_with(("HTTP/1.1 101 Switching Protocols", "HTTP/1.1 101"));
    assert!(parse_response(bare.as_bytes(), &client_key(RANDOM), MAX).is_ok());
}

#[test]
fn client_rejects_too_large() {
    let text = accepted_with(("", ""));
    let len = text.len();
    assert!(parse_response(text.as_bytes(), &client_key(RANDOM), len).is_ok());
    assert_eq!(
        parse_response(text.as_bytes(), &client_key(RANDOM), len - 1),
        Err(ClientError::TooLarge)
    );
    let endless = vec![b'a'; MAX + 1];
    assert_eq!(
        parse_response(&endless, &client_key(RANDOM), MAX),
        Err(ClientError::TooLarge)
    );
}

// ------------------------------------------------------------------ never panics

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_invariants(&data, 512);
        check_invariants(&data, MAX);
    }

    /// Mutations of a valid request explore the parser far deeper than random bytes.
    #[test]
    fn mutated_requests_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut data = CHROME.as_bytes().to_vec();
        for (at, byte) in edits {
            let at = at.index(data.len());
            data[at] = byte;
        }
        let cut = cut.index(data.len() + 1);
        check_invariants(&data[..cut], MAX);
    }
}

fn check_invariants(data: &[u8], max: usize) {
    match parse_request(data, max) {
        Ok(Parsed::Complete(req)) => {
            assert!(req.header_len <= data.len() && req.header_len <= max);
            assert!(is_valid_key(req.key));
            let mut out = [0u8; 512];
            assert!(write_accept(&mut out, req.key, None, None).is_some());
            assert!(req.path.starts_with('/'));
            let _ = req.headers().count() + req.protocols_iter().count();
        }
        Ok(Parsed::Plain(plain)) => assert!(plain.header_len <= data.len()),
        Ok(Parsed::Incomplete) => assert!(data.len() <= max),
        Err(reject) => assert!(matches!(reject.status(), 400 | 405 | 426 | 431)),
    }
    if let Ok(ClientParsed::Accepted { header_len, .. }) =
        parse_response(data, &client_key(RANDOM), max)
    {
        assert!(header_len <= data.len());
    }
}
