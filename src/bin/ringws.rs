//! `ringws serve`: the server binary (echo, broadcast or pubsub).
//!
//! Arguments are parsed by hand: a dozen `--name value` flags do not justify a dependency.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use ringws::modes::{Broadcast, Echo, PubSub};
use ringws::{BackpressurePolicy, Config, TlsCertFiles, TlsSettings};

const USAGE: &str = "usage: ringws serve [options]

  --addr IP                       listen address (default 127.0.0.1)
  --port N                        listen port (default 9001; 0 picks a free one)
  --workers N                     worker threads (default: number of cores)
  --mode echo|broadcast|pubsub    what the server does with messages (default echo)
  --no-pin                        do not pin workers to cores
  --connections-per-worker-max N  fixed-file table size per worker
  --handshakes-pending-max N      handshakes in progress per worker (503 past it)
  --handshake-timeout-ms N        time to complete the upgrade request (default 10000)
  --ping-interval-ms N            ping a connection idle this long (default 30000)
  --pong-timeout-ms N             close a peer silent this long after a ping (default 10000)
  --close-timeout-ms N            time for the close handshake and TCP end (default 5000)
  --max-message-bytes N           largest message and frame (default 16 MiB)
  --send-queue-bytes-max N        per-connection send queue limit (default 32 MiB)
  --send-queue-high-bytes N       stop reading a connection whose queue passes N (default 1 MiB)
  --send-queue-low-bytes N        read it again below N (default 256 KiB)
  --memory-budget-bytes N         bytes the engine may buffer in all (default: half of MemTotal)
  --memory-budget-grace-ms N      past 3/4 of the budget this long: close the largest, 1013
  --allocator-mmap-threshold-bytes N  glibc mmap threshold, fixed (0: leave the allocator alone)
  --send-zc-bytes-min N           SENDMSG_ZC for batches of N bytes or more (default 0: off)
  --no-deflate                    never agree to permessage-deflate (default: agree when offered)
  --deflate-level N               zlib level 0-9 for compressed sends (default 1)
  --deflate-bytes-min N           send messages under N bytes uncompressed (default 256)
  --deflate-client-takeover       let clients keep their window (a ~46 KiB inflater each)
  --backpressure close|drop       past the send queue limit (default close, with 1008)
  --origin ORIGIN                 allow this Origin (repeatable; default: any)
  --recv-buffers N                receive buffers per worker (power of two)
  --recv-buffer-bytes N           size of one receive buffer
  --recv-share-bytes N            bytes one receive takes before the others' turn (0: uncapped)
  --history N                     keep the last N messages per topic for `psub` resume (default 0: off;
                                  with --broker they are kept in Redis Streams, for every node)
  --history-ttl-s S               and drop history older than S seconds (default 0: no age limit)
  --history-topics-max N          topics that keep a history at once (default 100000)
  --tls-cert FILE                 serve wss:// only, with this PEM certificate chain
  --tls-key FILE                  the PEM private key of --tls-cert
  --tls-sni NAME=CERT,KEY         another certificate, for clients asking for NAME (repeatable)
                                  SIGHUP reloads every certificate and key file
  --broker redis://HOST:PORT      carry pubsub/broadcast between nodes through this Redis
                                  (repeatable: topics spread by consistent hash; same list,
                                  same order on every node)
  --broker-prefix P               prefix of the Redis channels (default ringws:)
  --broker-queue-bytes-max N      publishes queued per Redis while it is slow or down
                                  (default 64 MiB; past it dropped and counted)
  --broker-pipeline-max N         PUBLISHes per pipeline at most (default 256)";

#[derive(Clone, Copy)]
enum Mode {
    Echo,
    Broadcast,
    PubSub,
}

struct Args {
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_sni: Vec<(String, TlsCertFiles)>,
    addr: IpAddr,
    port: u16,
    mode: Mode,
    config: Config,
}

fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag}: not a number: {v}"))
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    match it.next().as_deref() {
        Some("serve") => {}
        Some("-h" | "--help") | None => return Err(String::new()),
        Some(other) => return Err(format!("unknown command: {other}")),
    }
    let mut a = Args {
        tls_cert: None,
        tls_key: None,
        tls_sni: Vec::new(),
        addr: IpAddr::from([127, 0, 0, 1]),
        port: 9001,
        mode: Mode::Echo,
        config: Config::default(),
    };
    let c = &mut a.config;
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--addr" => a.addr = num(&flag, it.next())?,
            "--port" => a.port = num(&flag, it.next())?,
            "--workers" => c.workers = num(&flag, it.next())?,
            "--mode" => {
                a.mode = match it.next().as_deref() {
                    Some("echo") => Mode::Echo,
                    Some("broadcast") => Mode::Broadcast,
                    Some("pubsub") => Mode::PubSub,
                    other => return Err(format!("--mode: echo|broadcast|pubsub, not {other:?}")),
                }
            }
            "--no-pin" => c.pin_workers = false,
            "--connections-per-worker-max" => c.connections_per_worker_max = num(&flag, it.next())?,
            "--handshakes-pending-max" => {
                c.handshakes_pending_per_worker_max = num(&flag, it.next())?
            }
            "--handshake-timeout-ms" => c.handshake_timeout_ms = num(&flag, it.next())?,
            "--ping-interval-ms" => c.ping_interval_ms = num(&flag, it.next())?,
            "--pong-timeout-ms" => c.pong_timeout_ms = num(&flag, it.next())?,
            "--close-timeout-ms" => c.close_timeout_ms = num(&flag, it.next())?,
            "--max-message-bytes" => {
                c.message_bytes_max = num(&flag, it.next())?;
                c.frame_bytes_max = c.message_bytes_max;
            }
            "--send-queue-bytes-max" => c.send_queue_bytes_max = num(&flag, it.next())?,
            "--send-queue-high-bytes" => c.send_queue_high_bytes = num(&flag, it.next())?,
            "--send-queue-low-bytes" => c.send_queue_low_bytes = num(&flag, it.next())?,
            "--memory-budget-bytes" => c.memory_budget_bytes = num(&flag, it.next())?,
            "--memory-budget-grace-ms" => c.memory_budget_grace_ms = num(&flag, it.next())?,
            "--allocator-mmap-threshold-bytes" => {
                c.allocator_mmap_threshold_bytes = num(&flag, it.next())?
            }
            "--send-zc-bytes-min" => c.send_zc_bytes_min = num(&flag, it.next())?,
            "--no-deflate" => c.deflate = false,
            "--deflate-level" => c.deflate_level = num(&flag, it.next())?,
            "--deflate-bytes-min" => c.deflate_compress_bytes_min = num(&flag, it.next())?,
            "--deflate-client-takeover" => c.deflate_client_context_takeover = true,
            "--backpressure" => {
                c.backpressure = match it.next().as_deref() {
                    Some("close") => BackpressurePolicy::Close,
                    Some("drop") => BackpressurePolicy::Drop,
                    other => return Err(format!("--backpressure: close|drop, not {other:?}")),
                }
            }
            "--origin" => c
                .origins_allowed
                .push(it.next().ok_or("--origin needs a value")?),
            "--recv-buffers" => c.recv_buffers_per_worker = num(&flag, it.next())?,
            "--recv-buffer-bytes" => c.recv_buffer_bytes = num(&flag, it.next())?,
            "--recv-share-bytes" => c.recv_share_bytes = num(&flag, it.next())?,
            "--history" => c.history_messages_max = num(&flag, it.next())?,
            "--history-ttl-s" => {
                let s: u64 = num(&flag, it.next())?;
                c.history_age_max_ms = s.saturating_mul(1000);
            }
            "--history-topics-max" => c.history_topics_max = num(&flag, it.next())?,
            "--tls-cert" => a.tls_cert = Some(it.next().ok_or("--tls-cert needs a file")?),
            "--tls-key" => a.tls_key = Some(it.next().ok_or("--tls-key needs a file")?),
            "--tls-sni" => {
                let v = it.next().ok_or("--tls-sni needs NAME=CERT,KEY")?;
                let parsed = v
                    .split_once('=')
                    .and_then(|(n, files)| Some((n, files.split_once(',')?)));
                let Some((name, (cert, key))) = parsed else {
                    return Err(format!("--tls-sni: NAME=CERT,KEY, not {v:?}"));
                };
                let files = TlsCertFiles {
                    cert: cert.into(),
                    key: key.into(),
                };
                a.tls_sni.push((name.to_string(), files));
            }
            "--broker" => c.brokers.push(it.next().ok_or("--broker needs a URL")?),
            "--broker-prefix" => {
                c.broker_channel_prefix = it.next().ok_or("--broker-prefix needs a value")?
            }
            "--broker-queue-bytes-max" => c.broker_queue_bytes_max = num(&flag, it.next())?,
            "--broker-pipeline-max" => c.broker_pipeline_max = num(&flag, it.next())?,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option: {other}")),
        }
    }
    match (a.tls_cert.take(), a.tls_key.take()) {
        (Some(cert), Some(key)) => {
            let mut tls = TlsSettings::new(cert, key);
            tls.sni = std::mem::take(&mut a.tls_sni);
            a.config.tls = Some(tls);
        }
        (None, None) if a.tls_sni.is_empty() => {}
        _ => return Err("--tls-cert and --tls-key go together (and --tls-sni needs them)".into()),
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("ringws: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::new(args.addr, args.port);
    let scheme = if args.config.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    let ready = |addr: SocketAddr| {
        println!("listening on {scheme}://{addr}");
        let _ = std::io::stdout().flush();
    };
    let res = match args.mode {
        Mode::Echo => ringws::run_until_signal(addr, args.config, |_| Echo, ready),
        Mode::Broadcast => ringws::run_until_signal(addr, args.config, |_| Broadcast, ready),
        Mode::PubSub => ringws::run_until_signal(addr, args.config, |_| PubSub, ready),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringws: {e}");
            ExitCode::FAILURE
        }
    }
}
