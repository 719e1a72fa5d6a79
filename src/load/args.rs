//! Command line of `ringws-load`, parsed by hand (no dependency) and validated once.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: ringws-load <echo|fanout|resume|connect|idle|handshakes> [options]
  --url ws://127.0.0.1:9001/   server (loopback IPv4 only; wss:// for TLS; the host may be
                               localhost, which is then the TLS server name)
  --tls-ca FILE                wss: trust the certificates of this PEM file
  --tls-insecure               wss: accept any certificate (self-signed; the server must
                               still prove it holds the key)
  --no-resume                  wss: no TLS session resumption (every handshake is full)
  --conns C                    connections (fanout: subscribers; plus 1 publisher)   [100]
  --size S                     payload bytes (fanout: >= 16)                          [512]
  --duration D                 seconds of the measured phase (fanout: at most)        [5]
  --workers W                  client rings (threads), each <= 19990 connections      [auto]
  --out FILE.json              JSON report; the SVG chart goes next to it
  --server-pid PID             read the server's VmRSS at each phase
  --src-ips N                  source addresses 127.0.0.1 ..= 127.0.0.N               [auto]
  --src-base IP                the first source address (then IP+1 ...)          [127.0.0.1]
                               with one outside 127.0.0.0/8, --url and --node-url may
                               be in its /16: network namespaces made for the test
                               (scripts/loadtest_nodes.sh NETNS=1); never anything else
  --interval-ms T              fanout: one broadcast every T ms (default: back to back)
  --inflight K                 fanout back to back: broadcasts in flight at most      [1]
  --broadcasts B               fanout: stop after B broadcasts
  --pin-cpus LIST              pin worker i to CPU LIST[i % len], e.g. 1 or 0,1
  --connect-timeout-ms T       per connection: connect + handshake                    [10000]
  --connect-window N           connects in progress per worker                        [256]
  --retries R                  retry a connection that failed to open, R times        [5]
  --deadline-s T               the whole run stops by then, whatever happens          [auto]
  --grace-ms T                 fanout: wait this long for the last deliveries; a      [5000]
                               broadcast incomplete this long stops holding the next
  --mode broadcast|pubsub      fanout: the server's mode; pubsub subscribes to        [broadcast]
                               --topic and publishes text (size >= 32)
  --topic T                    pubsub topic                                           [bench]
  resume: fanout through pubsub (`ringws serve --mode pubsub --history N`) with `psub`;
  each subscriber drops at random and comes back with `psub <topic> <last position>`:
  --churn-ms T                 a subscriber drops about every T ms (uniform 0.5T..1.5T) [1000]
  --down-ms T                  and stays away T ms before it reconnects               [100]
  --node-url ws://127.0.0.2:9002/  fanout: another node of the same cluster (repeatable);
                               subscribers are spread round robin over --url and these,
                               the publisher stays on --url (cross-node through a broker)
  --shard I/N                  run part I (1-based) of N of the scenario, for several client
                               machines (or processes) driving one test: --conns is the
                               total, split over the shards; only shard 1 publishes (fanout),
                               the others need --broadcasts. Start the others first, or give
                               all the same --start-at-unix-ms. Merge the JSON reports with
                               `ringws-load merge OUT.json IN.json...` (histograms included)
  --start-at-unix-ms T         begin the measured phase at this wall-clock time (ms since
                               1970), once connected: shards on several machines start
                               together (fanout timestamps are wall-clock, keep clocks synced)
  --deflate                    offer permessage-deflate (RFC 7692) on every connection;
                               JSON-like payloads; echo sends >= 256 B compressed
  --quiet                      no progress line
usage: ringws-load merge OUT.json IN.json [IN.json...]   combine the reports of the shards of one run
scenarios: echo (round trips), fanout (one publisher, C subscribers), resume (fanout with churn
  and resume, see above), connect (open, report),
  idle (open, hold for --duration), handshakes (each connection opens, upgrades and closes
  again and again for --duration: handshakes per second; with wss, full or resumed)";

/// Connections one ring may hold (its fixed-file table), below the 20,000 fd/ring limit here.
pub const CONNS_PER_WORKER_MAX: u32 = 19_990;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Echo,
    Fanout,
    /// Fanout through pubsub with churn: subscribers drop and resume from their position.
    Resume,
    Connect,
    Idle,
    /// Open, upgrade, close, again, for the whole run: handshakes per second.
    Handshakes,
}

impl Scenario {
    /// Fanout and resume: a publisher and subscribers.
    pub fn is_fanout(self) -> bool {
        matches!(self, Scenario::Fanout | Scenario::Resume)
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Echo => "echo",
            Scenario::Fanout => "fanout",
            Scenario::Resume => "resume",
            Scenario::Connect => "connect",
            Scenario::Idle => "idle",
            Scenario::Handshakes => "handshakes",
        }
    }
}

/// `--shard I/N`: this process runs part `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
    /// Connections of the shards before this one (the ids of this one's start there).
    pub first_id: u64,
}

#[derive(Debug, Clone)]
pub struct Args {
    pub scenario: Scenario,
    pub host: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub path: String,
    pub conns: u32,
    pub size: usize,
    pub duration_ms: u64,
    pub workers: Option<u32>,
    pub out: Option<PathBuf>,
    pub server_pid: Option<u32>,
    pub src_ips: Option<u32>,
    pub interval_ms: Option<u64>,
    pub inflight: u32,
    pub broadcasts: Option<u64>,
    pub pin_cpus: Vec<usize>,
    pub connect_timeout_ms: u64,
    pub connect_window: u32,
    pub retries: u8,
    pub deadline_ms: Option<u64>,
    pub grace_ms: u64,
    pub quiet: bool,
    /// Offer permessage-deflate on every connection (and compress echo sends).
    pub deflate: bool,
    /// Fanout through the server's pubsub mode on this topic (None: broadcast mode).
    pub pubsub_topic: Option<String>,
    /// `wss://`: speak TLS.
    pub tls: bool,
    /// `--tls-ca`: the PEM file of certificates to trust.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-insecure`: accept any certificate.
    pub tls_insecure: bool,
    /// TLS session resumption (rustls's client session cache); `--no-resume` turns it off.
    pub tls_resume: bool,
    /// Other nodes (`--node-url`): subscribers are spread over `--url` and these.
    pub nodes: Vec<(Ipv4Addr, u16)>,
    topic: String,
    /// resume: a subscriber drops about every this many ms.
    pub churn_ms: u64,
    /// resume: and stays away this long.
    pub down_ms: u64,
    /// `--src-base`: the first source address.
    pub src_base: Ipv4Addr,
    /// `--shard I/N` (after parsing, `conns` is this shard's part of the total).
    pub shard: Option<Shard>,
    /// `--start-at-unix-ms`: the measured phase begins at this wall-clock time.
    pub start_at_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError(pub String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.0, USAGE)
    }
}

impl std::error::Error for ArgError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ArgError> {
    Err(ArgError(msg.into()))
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, ArgError> {
    v.parse()
        .map_err(|_| ArgError(format!("{flag}: not a number: {v:?}")))
}

/// A parsed `--url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `HOST:PORT` as written (the Host header; its host part is the TLS server name).
    pub host: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub path: String,
    /// `wss://`.
    pub tls: bool,
}

/// `ws://HOST:PORT/PATH` or `wss://…` (default port 80 or 443). Where it may point is
/// checked with the other options (`Args::validate`: loopback, or the test's namespaces).
pub fn parse_url(url: &str) -> Result<Url, ArgError> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("ws://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (r, true)
    } else {
        return err(format!("--url must start with ws:// or wss://: {url:?}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, num::<u16>("--url port", p)?),
        None if tls => (authority, 443),
        None => (authority, 80),
    };
    let addr: Ipv4Addr = if host == "localhost" {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse()
            .map_err(|_| ArgError(format!("--url host must be an IPv4 address: {host:?}")))?
    };
    Ok(Url {
        host: authority.to_string(),
        addr,
        port,
        path: path.to_string(),
        tls,
    })
}

impl Args {
    pub fn parse(argv: &[String]) -> Result<Args, ArgError> {
        let Some(first) = argv.first() else {
            return err("missing scenario");
        };
        let scenario = match first.as_str() {
            "echo" => Scenario::Echo,
            "fanout" => Scenario::Fanout,
            "resume" => Scenario::Resume,
            "connect" => Scenario::Connect,
            "idle" => Scenario::Idle,
            "handshakes" => Scenario::Handshakes,
            other => return err(format!("unknown scenario {other:?}")),
        };
        let mut a = Args::defaults(scenario);
        let mut it = argv[1..].iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--quiet" => a.quiet = true,
                "--deflate" => a.deflate = true,
                "--tls-insecure" => a.tls_insecure = true,
                "--no-resume" => a.tls_resume = false,
                _ => {
                    let Some(v) = it.next() else {
                        return err(format!("{flag} needs a value"));
                    };
                    a.set(flag, v)?;
                }
            }
        }
        a.validate()?;
        a.split_for_shard();
        Ok(a)
    }

    /// With `--shard I/N`: `conns` becomes this shard's part of the total (the first
    /// `total % N` shards take one more), and its ids start after the earlier shards'.
    fn split_for_shard(&mut self) {
        let Some(s) = self.shard.as_mut() else { return };
        let (total, n, i) = (
            u64::from(self.conns),
            u64::from(s.count),
            u64::from(s.index - 1),
        );
        let part = |k: u64| total / n + u64::from(k < total % n);
        s.first_id = (0..i).map(part).sum();
        self.conns = part(i) as u32;
    }

    /// Whether this process runs the fanout publisher: a fanout scenario, and not a shard
    /// other than the first.
    pub fn has_publisher(&self) -> bool {
        self.scenario.is_fanout() && self.shard.is_none_or(|s| s.index == 1)
    }

    fn defaults(scenario: Scenario) -> Args {
        Args {
            scenario,
            host: "127.0.0.1:9001".into(),
            addr: Ipv4Addr::LOCALHOST,
            port: 9001,
            path: "/".into(),
            conns: 100,
            size: 512,
            duration_ms: 5_000,
            workers: None,
            out: None,
            server_pid: None,
            src_ips: None,
            interval_ms: None,
            inflight: 1,
            broadcasts: None,
            pin_cpus: Vec::new(),
            connect_timeout_ms: 10_000,
            connect_window: 256,
            retries: 5,
            deadline_ms: None,
            grace_ms: 5_000,
            quiet: false,
            deflate: false,
            pubsub_topic: (scenario == Scenario::Resume).then(|| "bench".into()),
            tls: false,
            tls_ca: None,
            tls_insecure: false,
            tls_resume: true,
            nodes: Vec::new(),
            topic: "bench".into(),
            churn_ms: 1_000,
            down_ms: 100,
            shard: None,
            start_at_unix_ms: None,
            src_base: Ipv4Addr::LOCALHOST,
        }
    }

    fn set(&mut self, flag: &str, v: &str) -> Result<(), ArgError> {
        match flag {
            "--url" => {
                let u = parse_url(v)?;
                (self.host, self.addr, self.port, self.path, self.tls) =
                    (u.host, u.addr, u.port, u.path, u.tls);
            }
            "--tls-ca" => self.tls_ca = Some(PathBuf::from(v)),
            "--conns" => self.conns = num(flag, v)?,
            "--size" => self.size = num(flag, v)?,
            "--duration" => self.duration_ms = (num::<f64>(flag, v)? * 1000.0) as u64,
            "--workers" => self.workers = Some(num(flag, v)?),
            "--out" => self.out = Some(PathBuf::from(v)),
            "--server-pid" => self.server_pid = Some(num(flag, v)?),
            "--src-ips" => self.src_ips = Some(num(flag, v)?),
            "--interval-ms" => self.interval_ms = Some(num(flag, v)?),
            "--inflight" => self.inflight = num(flag, v)?,
            "--broadcasts" => self.broadcasts = Some(num(flag, v)?),
            "--pin-cpus" => {
                self.pin_cpus = v
                    .split(',')
                    .map(|c| num(flag, c.trim()))
                    .collect::<Result<_, _>>()?
            }
            "--connect-timeout-ms" => self.connect_timeout_ms = num(flag, v)?,
            "--connect-window" => self.connect_window = num(flag, v)?,
            "--retries" => self.retries = num(flag, v)?,
            "--deadline-s" => self.deadline_ms = Some(num::<u64>(flag, v)? * 1000),
            "--grace-ms" => self.grace_ms = num(flag, v)?,
            "--churn-ms" => self.churn_ms = num(flag, v)?,
            "--down-ms" => self.down_ms = num(flag, v)?,
            "--src-base" => {
                self.src_base = v
                    .parse()
                    .map_err(|_| ArgError(format!("--src-base: not an IPv4 address: {v:?}")))?
            }
            "--start-at-unix-ms" => self.start_at_unix_ms = Some(num(flag, v)?),
            "--shard" => {
                let (i, n) = v
                    .split_once('/')
                    .ok_or_else(|| ArgError("--shard takes I/N, e.g. 2/3".into()))?;
                self.shard = Some(Shard {
                    index: num(flag, i)?,
                    count: num(flag, n)?,
                    first_id: 0,
                });
            }
            "--mode" => match v {
                "broadcast" => self.pubsub_topic = None,
                "pubsub" => self.pubsub_topic = Some(self.topic.clone()),
                _ => return err(format!("--mode must be broadcast or pubsub, not {v:?}")),
            },
            "--node-url" => {
                let url = parse_url(v)?;
                self.nodes.push((url.addr, url.port));
            }
            "--topic" => {
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return err("--topic must be non-empty, without spaces");
                }
                self.topic = v.to_string();
                if self.pubsub_topic.is_some() {
                    self.pubsub_topic = Some(v.to_string());
                }
            }
            _ => return err(format!("unknown option {flag:?}")),
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ArgError> {
        if self.conns == 0 || self.conns > 4_000_000 {
            return err("--conns must be in 1 ..= 4000000");
        }
        if self.scenario == Scenario::Resume && self.pubsub_topic.is_none() {
            return err("resume goes through pubsub (no --mode broadcast)");
        }
        if self.scenario == Scenario::Resume && self.churn_ms == 0 {
            return err("--churn-ms must be >= 1");
        }
        if self.scenario.is_fanout() && self.size < 16 {
            return err("fanout --size must be >= 16 (sequence number and timestamp)");
        }
        if self.pubsub_topic.is_some() && self.size < 32 {
            return err("pubsub --size must be >= 32 (hex sequence number and timestamp)");
        }
        if self.size > 16 << 20 {
            return err("--size must be <= 16 MiB");
        }
        if self.inflight == 0 || self.connect_window == 0 {
            return err("--inflight and --connect-window must be >= 1");
        }
        if self.tls && self.tls_ca.is_some() == self.tls_insecure {
            return err("wss:// needs exactly one of --tls-ca FILE and --tls-insecure");
        }
        if !self.tls && (self.tls_ca.is_some() || self.tls_insecure || !self.tls_resume) {
            return err("--tls-ca, --tls-insecure and --no-resume need a wss:// --url");
        }
        if self.scenario == Scenario::Handshakes && self.deflate {
            return err("handshakes: --deflate measures nothing there");
        }
        let base = self.src_base.octets();
        let ours = |a: Ipv4Addr| {
            a.is_loopback() || (!self.src_base.is_loopback() && a.octets()[..2] == base[..2])
        };
        for a in std::iter::once(self.addr).chain(self.nodes.iter().map(|n| n.0)) {
            if !ours(a) {
                return err(format!(
                    "--url and --node-url must be loopback addresses (127.0.0.0/8), or in the \
                     /16 of a --src-base outside it (the test's own namespaces), not {a}"
                ));
            }
        }
        if u32::from(self.src_base)
            .checked_add(self.src_ips.unwrap_or(1))
            .is_none()
            || (self.src_base.is_loopback() && self.src_base != Ipv4Addr::LOCALHOST)
        {
            return err("--src-base: 127.0.0.1, or an address outside 127.0.0.0/8 with room");
        }
        if let Some(s) = self.shard {
            if s.count == 0 || s.index == 0 || s.index > s.count || s.count > self.conns {
                return err("--shard I/N needs 1 <= I <= N <= --conns");
            }
            if self.scenario == Scenario::Resume {
                return err("resume cannot be sharded (its publisher checks every subscriber)");
            }
            if self.scenario.is_fanout() && s.index > 1 && self.broadcasts.is_none() {
                return err("a fanout shard other than 1/N needs --broadcasts (what to expect)");
            }
        }
        if self.workers == Some(0) || self.src_ips == Some(0) || self.src_ips > Some(254) {
            return err("--workers must be >= 1 and --src-ips in 1 ..= 254");
        }
        Ok(())
    }

    /// Connections including the fanout publisher.
    pub fn total_conns(&self) -> u32 {
        self.conns + u32::from(self.has_publisher())
    }

    /// Client rings: as asked, else enough that none holds more than `CONNS_PER_WORKER_MAX`.
    pub fn worker_count(&self) -> u32 {
        let needed = self.total_conns().div_ceil(CONNS_PER_WORKER_MAX);
        self.workers.unwrap_or(needed.max(1)).max(needed)
    }

    /// Source addresses: as asked, else enough that each uses at most 40% of `ports_per_ip`.
    ///
    /// connect(2) picks ports of one parity first (half the range) and searches linearly once
    /// they run short, so a source address past ~half its range makes each connect O(range):
    /// 4 addresses stalled at 56k connections. At 40% the search stays short.
    pub fn src_ip_count(&self, ports_per_ip: u32) -> u32 {
        let usable = (ports_per_ip as u64 * 2 / 5).max(1);
        let needed = (self.total_conns() as u64).div_ceil(usable) as u32;
        self.src_ips.unwrap_or(needed.clamp(1, 254))
    }

    /// When the whole run is stopped, whatever happens.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms.unwrap_or_else(|| {
            let connect_ms = self.connect_timeout_ms + self.total_conns() as u64 / 5;
            connect_ms + self.duration_ms + self.grace_ms + 30_000
        })
    }
}
