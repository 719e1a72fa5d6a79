//! The load generator against the real server binary over loopback: a small echo and a small
//! fanout, checked through the JSON report. No timing assertions.
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ringws serve` on a free port and returns it with its URL.
fn serve(mode: &str) -> (Server, String) {
    serve_with(mode, &[])
}

fn serve_with(mode: &str, extra: &[&str]) -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringws"))
        .args(["serve", "--port", "0", "--workers", "1", "--mode", mode])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ringws serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    (Server(child), format!("{url}/"))
}

fn out_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(format!("{name}-{}.json", std::process::id()))
}

fn value(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\": ");
    let start = json.find(&pat).unwrap_or_else(|| panic!("{key} missing")) + pat.len();
    let rest = &json[start..];
    rest[..rest.find([',', '\n']).unwrap()].parse().unwrap()
}

fn load(args: &[&str], out: &PathBuf) -> String {
    let status = Command::new(env!("CARGO_BIN_EXE_ringws-load"))
        .args(args)
        .args([
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--deadline-s",
            "60",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("run ringws-load");
    let json = std::fs::read_to_string(out).expect("report written");
    assert!(status.success(), "ringws-load failed:\n{json}");
    assert!(
        out.with_extension("svg").exists(),
        "chart next to the report"
    );
    json
}

#[test]
fn echo_50_connections_for_a_second() {
    let (server, url) = serve("echo");
    let pid = server.0.id().to_string();
    let out = out_path("echo");
    let json = load(
        &[
            "echo",
            "--url",
            &url,
            "--conns",
            "50",
            "--size",
            "100",
            "--duration",
            "1",
            "--server-pid",
            &pid,
        ],
        &out,
    );
    assert_eq!(value(&json, "connected"), 50.0);
    assert_eq!(value(&json, "errors"), 0.0);
    assert!(
        value(&json, "messages") >= 50.0,
        "every connection got at least one echo"
    );
    assert!(value(&json, "latency_max_us") >= value(&json, "latency_p50_us"));
    assert!(value(&json, "server_rss_bytes") > 0.0);
}

#[test]
fn fanout_200_subscribers_20_broadcasts_nothing_lost() {
    let (_server, url) = serve("broadcast");
    let out = out_path("fanout");
    let json = load(
        &[
            "fanout",
            "--url",
            &url,
            "--conns",
            "200",
            "--size",
            "64",
            "--broadcasts",
            "20",
            "--inflight",
            "2",
            "--duration",
            "30",
            "--workers",
            "2",
        ],
        &out,
    );
    assert_eq!(value(&json, "broadcasts"), 20.0);
    assert_eq!(value(&json, "broadcasts_complete"), 20.0);
    assert_eq!(value(&json, "deliveries"), 4000.0);
    assert_eq!(value(&json, "missing"), 0.0);
    assert_eq!(value(&json, "out_of_order"), 0.0);
}

#[test]
fn connect_then_idle() {
    let (_server, url) = serve("echo");
    let json = load(
        &["connect", "--url", &url, "--conns", "300"],
        &out_path("connect"),
    );
    assert_eq!(value(&json, "connected"), 300.0);
    assert!(value(&json, "connect_per_s") > 0.0);
    // The server pings every 100 ms and closes a connection silent 300 ms after a ping: idle
    // connections survive only if the client core answers the pings.
    let (_pinging, url) = serve_with(
        "echo",
        &["--ping-interval-ms", "100", "--pong-timeout-ms", "300"],
    );
    let json = load(
        &["idle", "--url", &url, "--conns", "100", "--duration", "1.5"],
        &out_path("idle"),
    );
    assert_eq!(value(&json, "connected"), 100.0);
    assert_eq!(value(&json, "errors"), 0.0);
}

#[test]
fn fanout_through_pubsub_300_subscribers_nothing_lost() {
    let (_server, url) = serve("pubsub");
    let json = load(
        &[
            "fanout",
            "--mode",
            "pubsub",
            "--topic",
            "load-test",
            "--url",
            &url,
            "--conns",
            "300",
            "--size",
            "48",
            "--broadcasts",
            "10",
            "--duration",
            "30",
        ],
        &out_path("pubsub"),
    );
    assert_eq!(
        value(&json, "connected"),
        300.0,
        "every subscription confirmed"
    );
    assert_eq!(value(&json, "deliveries"), 3000.0);
    assert_eq!(value(&json, "missing"), 0.0);
    assert_eq!(value(&json, "errors"), 0.0);
}
