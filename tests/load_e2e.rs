//! The load generator against the real server binary over loopback: a small echo and a small
//! fanout, checked through the JSON report; the same with `--deflate` (every connection offers
//! permessage-deflate; compressed messages still pass the payload checks), and against a server
//! started with `--no-deflate`, which declines. No timing assertions.
mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
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

/// A number of the report (true and false read as 1 and 0).
fn value(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\": ");
    let start = json.find(&pat).unwrap_or_else(|| panic!("{key} missing")) + pat.len();
    let rest = &json[start..];
    match &rest[..rest.find([',', '\n']).unwrap()] {
        "true" => 1.0,
        "false" => 0.0,
        v => v.parse().unwrap(),
    }
}

fn load(args: &[&str], out: &PathBuf) -> String {
    let (ok, json) = run_load(args, out);
    assert!(ok, "ringws-load failed:\n{json}");
    assert!(
        out.with_extension("svg").exists(),
        "chart next to the report"
    );
    json
}

/// Runs `ringws-load` with a JSON report at `out`: whether it exited 0, and the report.
fn run_load(args: &[&str], out: &PathBuf) -> (bool, String) {
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
    (status.success(), json)
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
    assert!(
        value(&json, "server_cpu_run_s") > 0.0,
        "the server's CPU time over the run, read from /proc"
    );
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

/// A sample of the server's `GET /metrics` (`url` is the WebSocket URL `serve` gave).
fn metric(url: &str, name: &str) -> u64 {
    let addr: SocketAddr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    common::metric(addr, name)
}

/// `ringws-load LINE --deflate` (LINE split at spaces); the run must pass and report the offer.
fn load_deflate(name: &str, line: &str) -> String {
    let mut args: Vec<&str> = line.split_whitespace().collect();
    args.push("--deflate");
    let json = load(&args, &out_path(name));
    assert_eq!(value(&json, "errors"), 0.0, "{json}");
    assert_eq!(value(&json, "deflate_offered"), 1.0);
    json
}

#[test]
fn echo_with_deflate_compresses_both_ways() {
    let (_server, url) = serve("echo");
    let json = load_deflate(
        "deflate-echo",
        &format!("echo --url {url} --conns 20 --size 1000 --duration 1"),
    );
    assert_eq!(value(&json, "connected"), 20.0);
    assert_eq!(
        value(&json, "deflate_agreed"),
        20.0,
        "every connection agreed"
    );
    assert_eq!(value(&json, "deflate_declined"), 0.0);
    let echoes = value(&json, "messages");
    assert!(echoes >= 20.0, "every connection got at least one echo");
    // Every echo came back compressed and was byte-compared once inflated (errors == 0).
    assert!(value(&json, "messages_compressed_received") >= echoes);
    assert!(value(&json, "messages_compressed_sent") >= echoes);
    assert!(value(&json, "compression_ratio") > 1.0, "{json}");
    assert_eq!(metric(&url, "ringws_deflate_connections"), 20);
    assert!(metric(&url, "ringws_messages_inflated_total") >= echoes as u64);
    assert!(metric(&url, "ringws_messages_deflated_total") >= echoes as u64);
}

#[test]
fn fanout_with_deflate_nothing_lost() {
    let (_server, url) = serve("broadcast");
    let json = load_deflate(
        "deflate-fanout",
        &format!(
            "fanout --url {url} --conns 200 --size 1024 --broadcasts 20 --inflight 2 \
             --duration 30 --workers 2"
        ),
    );
    assert_eq!(value(&json, "connected"), 200.0);
    assert_eq!(value(&json, "deflate_agreed"), 200.0);
    assert_eq!(value(&json, "deliveries"), 4000.0);
    assert_eq!(value(&json, "missing"), 0.0);
    assert!(value(&json, "messages_compressed_received") >= 4000.0);
    assert!(
        value(&json, "compression_ratio") > 1.5,
        "JSON-like payloads"
    );
    assert!(value(&json, "wire_bytes_per_message") < 1024.0);
    // The publisher sends plain; the server compressed the broadcast for every subscriber.
    assert_eq!(value(&json, "messages_compressed_sent"), 0.0);
    assert!(metric(&url, "ringws_messages_deflated_total") >= 4000);
}

#[test]
fn pubsub_text_with_deflate_nothing_lost() {
    let (_server, url) = serve("pubsub");
    let json = load_deflate(
        "deflate-pubsub",
        &format!(
            "fanout --mode pubsub --url {url} --conns 100 --size 600 --broadcasts 10 --duration 30"
        ),
    );
    assert_eq!(
        value(&json, "connected"),
        100.0,
        "every subscription confirmed"
    );
    assert_eq!(value(&json, "deflate_agreed"), 100.0);
    assert_eq!(value(&json, "deliveries"), 1000.0);
    assert!(value(&json, "messages_compressed_received") >= 1000.0);
    assert!(metric(&url, "ringws_messages_deflated_total") >= 1000);
}

#[test]
fn a_server_without_deflate_declines_and_the_run_stays_plain() {
    let (_server, url) = serve_with("broadcast", &["--no-deflate"]);
    let json = load_deflate(
        "deflate-declined",
        &format!("fanout --url {url} --conns 100 --size 512 --broadcasts 10 --duration 30"),
    );
    assert_eq!(value(&json, "connected"), 100.0);
    assert_eq!(value(&json, "deflate_agreed"), 0.0);
    assert_eq!(value(&json, "deflate_declined"), 100.0, "each one counted");
    assert_eq!(value(&json, "deliveries"), 1000.0);
    assert_eq!(value(&json, "messages_compressed_received"), 0.0);
    assert_eq!(metric(&url, "ringws_messages_deflated_total"), 0);
    assert_eq!(metric(&url, "ringws_deflate_connections"), 0);
    let (_echo, url) = serve_with("echo", &["--no-deflate"]);
    let json = load_deflate(
        "deflate-declined-echo",
        &format!("echo --url {url} --conns 10 --size 512 --duration 0.5"),
    );
    assert_eq!(value(&json, "deflate_declined"), 10.0);
    assert_eq!(
        value(&json, "messages_compressed_sent"),
        0.0,
        "plain when declined"
    );
    assert!(value(&json, "messages") >= 10.0);
}

fn resume_args(url: &str) -> Vec<&str> {
    vec![
        "resume",
        "--url",
        url,
        "--conns",
        "100",
        "--size",
        "48",
        "--interval-ms",
        "2",
        "--duration",
        "3",
        "--churn-ms",
        "300",
        "--down-ms",
        "30",
    ]
}

#[test]
fn resume_under_churn_loses_nothing() {
    let (_server, url) = serve_with("pubsub", &["--history", "100000"]);
    let json = load(&resume_args(&url), &out_path("resume"));
    let drops = value(&json, "resume_drops");
    assert!(drops > 0.0, "subscribers dropped: {json}");
    assert_eq!(value(&json, "resume_resumed"), drops, "every drop resumed");
    assert!(value(&json, "resume_recovered") > 0.0, "replays happened");
    assert_eq!(value(&json, "resume_gaps"), 0.0);
    assert_eq!(value(&json, "resume_not_back"), 0.0);
    assert_eq!(value(&json, "missing"), 0.0);
    assert_eq!(value(&json, "out_of_order"), 0.0);
    assert_eq!(
        value(&json, "deliveries"),
        value(&json, "messages") * 100.0,
        "every subscriber got every message once"
    );
    assert_eq!(value(&json, "passed"), 1.0);
}

#[test]
fn resume_past_history_reports_gaps_and_fails() {
    // Five messages of history at 500 publishes/s: a subscriber away for 30 ms misses some.
    let (_server, url) = serve_with("pubsub", &["--history", "5"]);
    let (ok, json) = run_load(&resume_args(&url), &out_path("resume-gap"));
    assert!(!ok, "a run with gaps must fail:\n{json}");
    assert!(value(&json, "resume_gaps") > 0.0, "{json}");
    assert!(value(&json, "missing") > 0.0, "{json}");
    assert_eq!(value(&json, "passed"), 0.0);
}

/// `fanout ... --shard I/2` for one shard, started in the background.
fn shard(url: &str, i: u32, out: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ringws-load"))
        .args(["fanout", "--url", url, "--conns", "301", "--size", "64"])
        .args(["--broadcasts", "40", "--duration", "20", "--quiet"])
        .args(["--shard", &format!("{i}/2"), "--deadline-s", "60"])
        .args(["--out", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .expect("run ringws-load")
}

fn merge(out: &std::path::Path, inputs: &[&std::path::Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ringws-load"))
        .arg("merge")
        .arg(out)
        .args(inputs)
        .output()
        .expect("run ringws-load merge")
}

/// One fanout driven by two processes (`--shard 1/2` publishes, `2/2` only subscribes) and
/// their reports merged: every subscriber of both got every broadcast, the merged counts are
/// the sums, and the merged histogram holds every delivery.
#[test]
fn a_fanout_split_over_two_shards_merges_into_the_whole_run() {
    let (_server, url) = serve("broadcast");
    let (o1, o2, merged) = (out_path("shard1"), out_path("shard2"), out_path("merged"));
    let mut second = shard(&url, 2, &o2);
    // The subscribers of 2/2 are connected (150 of 301) before 1/2 starts publishing.
    let open = "ringws_connections{state=\"open\"}";
    let ready = std::time::Instant::now();
    while metric(&url, open) < 150 {
        assert!(
            ready.elapsed() < common::READ_TIMEOUT,
            "shard 2/2 did not connect"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(shard(&url, 1, &o1).wait().unwrap().success(), "shard 1/2");
    assert!(second.wait().unwrap().success(), "shard 2/2");
    let (j1, j2) = (
        std::fs::read_to_string(&o1).unwrap(),
        std::fs::read_to_string(&o2).unwrap(),
    );
    assert_eq!(value(&j1, "connected"), 151.0, "shard 1 takes the odd one");
    assert_eq!(value(&j2, "connected"), 150.0);
    let out = merge(&merged, &[&o1, &o2]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = std::fs::read_to_string(&merged).unwrap();
    assert_eq!(value(&m, "merged_shards"), 2.0);
    assert_eq!(value(&m, "connected"), 301.0);
    assert_eq!(value(&m, "broadcasts"), 40.0);
    assert_eq!(value(&m, "broadcasts_complete"), 40.0);
    assert_eq!(value(&m, "deliveries"), 40.0 * 301.0);
    assert_eq!(value(&m, "missing"), 0.0);
    let hist: serde_json::Value = serde_json::from_str(&m).unwrap();
    let counted: u64 = hist["latency_histogram_ns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(
        counted,
        40 * 301,
        "the merged histogram holds every delivery"
    );
    assert!(value(&m, "fanout_complete_max_ms") >= value(&j1, "fanout_complete_max_ms"));
    // A shard short is refused, by name.
    let out = merge(&merged, &[&o1]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard 2/2 is missing"));
}
