//! The JSON report carries every key scripts rely on; the chart and the command line.
use ringws::load::args::{Args, Scenario};
use ringws::load::payload;
use ringws::load::report::{Compression, Errors, Report, Rss, Sample};
use ringws::load::stats::BroadcastResult;
use ringws::load::svg;

const KEYS: &[&str] = &[
    "scenario",
    "connections",
    "payload_bytes",
    "duration_s",
    "messages_per_s",
    "deliveries_per_s",
    "latency_p50_us",
    "latency_p99_us",
    "latency_max_us",
    "fanout_complete_p99_ms",
    "errors",
    "server_rss_bytes",
    "connect_per_s",
];

fn sample_report() -> Report {
    Report {
        scenario: "fanout".into(),
        connections: 3,
        connected: 3,
        payload_bytes: 64,
        duration_s: 2.0,
        connect_s: 0.5,
        messages: 2,
        deliveries: 6,
        latency_p50_ns: 1_500,
        latency_p99_ns: 9_000,
        latency_max_ns: 12_000,
        latency_curve: vec![(0.0, 1_000), (50.0, 1_500), (100.0, 12_000)],
        broadcasts: vec![
            BroadcastResult {
                seq: 0,
                deliveries: 3,
                complete_ns: 4_000_000,
                sent_ns: 1_000_000,
                last_ns: 5_000_000,
            },
            BroadcastResult {
                seq: 1,
                deliveries: 3,
                complete_ns: 2_000_000,
                sent_ns: 3_000_000,
                last_ns: 5_000_000,
            },
        ],
        fanout_complete_p99_ns: 4_000_000,
        errors: Errors {
            missing: 1,
            ..Errors::default()
        },
        rss: Rss {
            start_bytes: 1000,
            connected_bytes: 4000,
            end_bytes: 3000,
        },
        timeline: vec![Sample {
            t_s: 1.0,
            open: 4,
            deliveries_per_s: 6.0,
            ..Sample::default()
        }],
        ..Report::default()
    }
}

/// The raw text after `"key": ` up to the next comma or newline.
fn value<'a>(json: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\": ");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("key {key} missing"))
        + pat.len();
    let rest = &json[start..];
    &rest[..rest.find([',', '\n']).unwrap()]
}

#[test]
fn json_has_every_required_key_with_its_value() {
    let json = sample_report().to_json();
    for k in KEYS {
        assert!(
            json.contains(&format!("\"{k}\": ")),
            "key {k} missing in\n{json}"
        );
    }
    assert_eq!(value(&json, "scenario"), "\"fanout\"");
    assert_eq!(value(&json, "connections"), "3");
    assert_eq!(value(&json, "deliveries_per_s"), "3");
    assert_eq!(value(&json, "messages_per_s"), "1");
    assert_eq!(value(&json, "latency_p50_us"), "1.500");
    assert_eq!(value(&json, "latency_max_us"), "12");
    assert_eq!(value(&json, "fanout_complete_p99_ms"), "4");
    assert_eq!(value(&json, "errors"), "1");
    assert_eq!(value(&json, "server_rss_bytes"), "4000");
    assert_eq!(value(&json, "server_rss_per_conn_bytes"), "1000");
    assert_eq!(value(&json, "connect_per_s"), "6");
    assert_eq!(value(&json, "server_cpu_run_s"), "0", "no --server-pid");
    let r = Report {
        server_cpu_run_s: 0.5,
        ..sample_report()
    };
    assert_eq!(
        value(&r.to_json(), "server_cpu_us_per_message"),
        "83333.333"
    );
    assert_eq!(value(&json, "passed"), "false");
}

#[test]
fn json_is_balanced_and_has_no_trailing_commas() {
    let json = sample_report().to_json();
    let opens = json.matches(['{', '[']).count();
    let closes = json.matches(['}', ']']).count();
    assert_eq!(opens, closes);
    assert!(!json.contains(",\n}") && !json.contains(",\n  ]") && !json.contains(", ]"));
    assert!(json.trim_end().ends_with('}'));
}

#[test]
fn a_run_without_errors_passes() {
    let mut r = sample_report();
    assert!(!r.passed());
    r.errors = Errors::default();
    assert!(r.passed());
    r.errors.out_of_order = 1;
    assert!(!r.passed());
}

#[test]
fn svg_chart_has_its_panels() {
    let svg = svg::render(&sample_report());
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("deliveries/s over time"));
    assert!(svg.contains("latency percentiles"));
    assert!(svg.contains("time until the last subscriber"));
    assert_eq!(
        svg.matches("<polyline").count(),
        3,
        "rate, open connections, latency curve"
    );
    assert_eq!(
        svg.matches("<rect").count(),
        1 + 3 + 2,
        "background, 3 frames, one bar per broadcast"
    );
    assert_eq!(svg::nice_max(730.0), 1000.0);
    assert_eq!(svg::nice_max(0.0), 1.0);
    assert_eq!(svg::short(1_234_567.0), "1.235M");
}

fn args(line: &str) -> Result<Args, String> {
    let v: Vec<String> = line.split_whitespace().map(String::from).collect();
    Args::parse(&v).map_err(|e| e.0)
}

#[test]
fn command_line_parses_and_refuses_non_loopback_targets() {
    let a = args("fanout --url ws://127.0.0.1:9001/chat --conns 1000000 --size 64 --broadcasts 10")
        .unwrap();
    assert_eq!(a.scenario, Scenario::Fanout);
    assert_eq!(
        (a.port, a.path.as_str(), a.host.as_str()),
        (9001, "/chat", "127.0.0.1:9001")
    );
    assert_eq!(a.total_conns(), 1_000_001);
    assert_eq!(a.worker_count(), 51, "19,990 per ring at most");
    assert_eq!(
        a.src_ip_count(28_232),
        89,
        "40% of the ports of each address"
    );
    assert_eq!(a.src_ip_count(64_512), 39);
    assert!(args("echo --url ws://10.0.0.1:9001/").is_err());
    assert!(args("echo --url ws://example.com:9001/").is_err());
    assert!(
        args("fanout --size 8").is_err(),
        "fanout needs 16 bytes of header"
    );
    assert!(args("flood").is_err());
    assert!(!args("echo").unwrap().deflate);
    let d = args("echo --deflate --conns 5").unwrap();
    assert!(d.deflate && d.conns == 5, "--deflate takes no value");
    assert!(args("echo --conns").is_err());
    let e = args("echo --workers 2 --conns 50000").unwrap();
    assert_eq!(e.worker_count(), 3, "asked for 2, but 50,000 need 3 rings");
    let n =
        args("fanout --node-url ws://127.0.0.11:9101/ --node-url ws://127.0.0.12:9101/").unwrap();
    assert_eq!(
        n.nodes,
        vec![
            ([127, 0, 0, 11].into(), 9101),
            ([127, 0, 0, 12].into(), 9101)
        ]
    );
    assert!(
        args("fanout --node-url ws://10.0.0.2:9101/").is_err(),
        "loopback only"
    );
    // The test's own namespaces: only inside the /16 of a non-loopback --src-base.
    let ns = args("fanout --src-base 10.77.0.1 --src-ips 4 --url ws://10.77.1.10:9101/").unwrap();
    assert_eq!(ns.src_base, std::net::Ipv4Addr::new(10, 77, 0, 1));
    assert!(args("fanout --src-base 10.77.0.1 --url ws://10.78.1.10:9101/").is_err());
    assert!(args("fanout --src-base 10.77.0.1 --node-url ws://192.168.1.1:9101/").is_err());
    assert!(
        args("fanout --src-base 127.0.0.5").is_err(),
        "loopback sources start at .1"
    );
}

#[test]
fn shards_split_the_connections_and_only_the_first_publishes() {
    let parts: Vec<_> = (1..=3)
        .map(|i| args(&format!("fanout --conns 10 --broadcasts 5 --shard {i}/3")).unwrap())
        .collect();
    let conns: Vec<u32> = parts.iter().map(|a| a.conns).collect();
    assert_eq!(conns, [4, 3, 3]);
    let first: Vec<u64> = parts.iter().map(|a| a.shard.unwrap().first_id).collect();
    assert_eq!(first, [0, 4, 7]);
    let publishers: Vec<bool> = parts.iter().map(|a| a.has_publisher()).collect();
    assert_eq!(publishers, [true, false, false]);
    assert_eq!(parts[0].total_conns(), 5, "shard 1 adds the publisher");
    assert_eq!(parts[1].total_conns(), 3);
    assert!(
        args("fanout --shard 2/3").is_err(),
        "the others need --broadcasts"
    );
    assert!(args("fanout --shard 4/3 --broadcasts 5").is_err());
    assert!(args("fanout --shard 0/3 --broadcasts 5").is_err());
    assert!(
        args("fanout --conns 2 --shard 1/3").is_err(),
        "more shards than connections"
    );
    assert!(args("resume --shard 1/2").is_err());
    assert!(
        args("echo --shard 2/2").unwrap().conns == 50,
        "echo splits too"
    );
}

#[test]
fn payloads_round_trip_and_corruption_is_caught() {
    let t = payload::template(512);
    let mut buf = vec![0u8; 512];
    payload::write_echo(&mut buf, &t, 42);
    assert!(payload::check_echo(&buf, &t, 42));
    assert!(!payload::check_echo(&buf, &t, 43));
    buf[300] ^= 1;
    assert!(!payload::check_echo(&buf, &t, 42));
    assert!(!payload::check_echo(&buf[..511], &t, 42));
    let mut f = vec![0u8; 64];
    payload::write_fanout(&mut f, &t, 7, 123_456);
    assert_eq!(payload::read_fanout(&f), Some((7, 123_456)));
    assert_eq!(payload::read_fanout(&f[..15]), None);
    assert!(payload::check_fanout_body(
        &f,
        &t,
        payload::FANOUT_HEADER_BYTES
    ));
    f[40] ^= 1;
    assert!(!payload::check_fanout_body(
        &f,
        &t,
        payload::FANOUT_HEADER_BYTES
    ));
    assert!(
        !payload::check_fanout_body(&t, &t[..64], 16),
        "longer than the template"
    );
    let letters = payload::template_for(40, true, false);
    let mut t = vec![0u8; 40];
    payload::write_fanout_text(&mut t, &letters, 0x0123_4567_89ab_cdef, 42);
    assert!(t.is_ascii(), "pubsub carries text");
    assert_eq!(&t[..16], b"0123456789abcdef");
    assert_eq!(
        payload::read_fanout_text(&t),
        Some((0x0123_4567_89ab_cdef, 42))
    );
    assert!(payload::check_fanout_body(&t, &letters, 32));
    t[3] = b'z';
    assert_eq!(payload::read_fanout_text(&t), None);
    assert_eq!(payload::read_fanout_text(&t[..31]), None);
}

#[test]
fn json_filler_is_text_deterministic_and_compresses_like_json() {
    let j = payload::template_for(4096, false, true);
    assert_eq!(j.len(), 4096);
    assert!(j.is_ascii() && j.starts_with(br#"{"e":"trade","E":"#));
    assert_eq!(j, payload::json_template(4096), "the same in every worker");
    assert_eq!(&payload::json_template(100)[..], &j[..100]);
    let mut packed = Vec::new();
    ringws::proto::deflate::Deflater::new(1, 15).compress_message(&j, &mut packed);
    let ratio = j.len() as f64 / packed.len() as f64;
    // Varying numbers: compressible as JSON is, not a repeated string (which gives ~50:1).
    assert!((2.0..10.0).contains(&ratio), "ratio {ratio}");
    let mut f = vec![0u8; 512];
    payload::write_fanout_text(&mut f, &j, 3, 9);
    assert_eq!(payload::read_fanout_text(&f), Some((3, 9)));
    assert!(payload::check_fanout_body(&f, &j, 32));
}

#[test]
fn compression_counts_add_up_in_the_report() {
    let mut r = sample_report();
    let per_worker = Compression {
        offered: true,
        agreed: 2,
        declined: 1,
        messages_received: 4,
        compressed_received: 3,
        compressed_sent: 0,
        wire_bytes_received: 500,
        payload_bytes_received: 1500,
    };
    r.compression.add(&per_worker);
    r.compression.add(&per_worker);
    let json = r.to_json();
    assert_eq!(value(&json, "deflate_offered"), "true");
    assert_eq!(value(&json, "deflate_agreed"), "4");
    assert_eq!(value(&json, "deflate_declined"), "2");
    assert_eq!(value(&json, "messages_compressed_received"), "6");
    assert_eq!(value(&json, "wire_bytes_received"), "1000");
    assert_eq!(value(&json, "compression_ratio"), "3");
    assert_eq!(value(&json, "wire_bytes_per_message"), "125");
    assert!(r.table().contains("deflate_agreed"));
    assert_eq!(value(&sample_report().to_json(), "compression_ratio"), "0");
}

#[test]
fn pubsub_mode_needs_room_for_its_text_header() {
    let a = args("fanout --mode pubsub --topic news --size 32").unwrap();
    assert_eq!(a.pubsub_topic.as_deref(), Some("news"));
    assert_eq!(
        args("fanout --topic t --mode pubsub")
            .unwrap()
            .pubsub_topic
            .as_deref(),
        Some("t")
    );
    assert_eq!(args("fanout --size 64").unwrap().pubsub_topic, None);
    assert!(args("fanout --mode pubsub --size 31").is_err());
    assert!(args("fanout --mode multicast").is_err());
}
