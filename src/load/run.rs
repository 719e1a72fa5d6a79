//! One run of the load generator: start the client workers, step through the phases
//! (connect → run → drain → stop), print progress each second, then merge the results into a
//! report. Everything is bounded by the run deadline.

use std::fs;
use std::io;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use super::args::{Args, CONNS_PER_WORKER_MAX, Scenario};
use super::report::{Report, Rss, Sample, progress_line};
use super::stats::{self, Broadcasts, Latency};
use crate::runtime::client::{self, Outcome, Plan, Setup, Shared, phase};
use crate::runtime::tls_client::{self, TlsTarget, Trust};

/// Ports the kernel picks from per source address (`ip_local_port_range`), 28,232 by default.
pub fn ports_per_ip() -> u32 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            Some(hi.saturating_sub(lo) + 1)
        })
        .unwrap_or(28_232)
}

/// VmRSS of a process in bytes, from /proc/PID/status; 0 if unreadable.
pub fn rss_bytes(pid: Option<u32>) -> u64 {
    let Some(pid) = pid else { return 0 };
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Clock ticks per second of the times in /proc/PID/stat (USER_HZ: 100 on every Linux
/// architecture we build for).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system) a process has used, from /proc/PID/stat; 0 if unreadable.
pub fn cpu_s(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime
    // are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / USER_HZ
}

/// Splits the connections over the workers; worker 0 also takes the fanout publisher.
pub fn setups(args: &Args, workers: u32) -> Vec<Setup> {
    let per = args.conns / workers;
    let extra = args.conns % workers;
    let mut first_id = args.shard.map_or(0, |s| s.first_id);
    (0..workers)
        .map(|w| {
            let conns = per + u32::from(w < extra);
            let s = Setup {
                index: w as usize,
                conns,
                first_id,
                publisher: w == 0 && args.has_publisher(),
                cpu: (!args.pin_cpus.is_empty())
                    .then(|| args.pin_cpus[w as usize % args.pin_cpus.len()]),
            };
            first_id += u64::from(conns) + u64::from(s.publisher);
            assert!(conns + u32::from(s.publisher) <= CONNS_PER_WORKER_MAX);
            s
        })
        .collect()
}

fn plan(args: &Args, src_ips: u32) -> Plan {
    Plan {
        scenario: args.scenario,
        host: args.host.clone(),
        path: args.path.clone(),
        server: SocketAddrV4::new(args.addr, args.port),
        nodes: args
            .nodes
            .iter()
            .map(|&(a, p)| SocketAddrV4::new(a, p))
            .collect(),
        src_ips,
        src_base: args.src_base,
        size: args.size,
        subscribers: u64::from(args.conns),
        interval_ms: args.interval_ms,
        inflight: args.inflight,
        broadcasts: args.broadcasts,
        duration_ms: args.duration_ms,
        connect_timeout_ms: args.connect_timeout_ms,
        connect_window: args.connect_window,
        retries: args.retries,
        stall_ms: args.grace_ms,
        pubsub_topic: args.pubsub_topic.clone(),
        churn: (args.scenario == Scenario::Resume).then_some((args.churn_ms, args.down_ms)),
        deflate: args.deflate,
        tls: None,
    }
}

/// `wss://`: the shared TLS client configuration (reads `--tls-ca`).
fn tls_target(args: &Args) -> io::Result<Option<TlsTarget>> {
    if !args.tls {
        return Ok(None);
    }
    let trust = match &args.tls_ca {
        Some(path) => Trust::Ca(path),
        None => Trust::Insecure,
    };
    // One cached session per connection, so that every connection can resume.
    let sessions = if args.tls_resume {
        args.total_conns().max(256) as usize
    } else {
        0
    };
    tls_client::target(&args.host, trust, sessions)
        .map(Some)
        .map_err(io::Error::other)
}

/// What the main thread watches while workers run.
struct Clock {
    connect_end_ns: u64,
    run_start_ns: u64,
    run_end_ns: u64,
    deadline_hit: bool,
    /// The server's and this process's CPU seconds when the run phase began and ended.
    server_cpu_s: (f64, f64),
    client_cpu_s: (f64, f64),
}

fn phase_name(p: u8) -> &'static str {
    match p {
        phase::CONNECT => "connect",
        phase::RUN => "run",
        phase::DRAIN => "drain",
        _ => "stop",
    }
}

/// SIGINT/SIGTERM end the run early, with a report; a second one exits at once.
fn stop_on_signals(shared: Arc<Shared>) {
    if crate::runtime::sys::block_shutdown_signals().is_err() {
        return; // signals keep their default action: the process just dies
    }
    let _ = thread::Builder::new()
        .name("load-signals".into())
        .spawn(move || {
            let _ = crate::runtime::sys::wait_signal();
            eprintln!("ringws-load: interrupted, stopping (again to exit at once)");
            shared.interrupted.store(true, Ordering::Release);
            let _ = crate::runtime::sys::wait_signal();
            std::process::exit(130);
        });
}

/// Runs the scenario and returns its report.
pub fn run(args: &Args) -> io::Result<Report> {
    let workers = args.worker_count();
    let src_ips = args.src_ip_count(ports_per_ip());
    let mut plan = plan(args, src_ips);
    plan.tls = tls_target(args)?;
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared::new());
    stop_on_signals(shared.clone());
    let mut rss = Rss {
        start_bytes: rss_bytes(args.server_pid),
        ..Rss::default()
    };
    let handles: Vec<_> = setups(args, workers)
        .into_iter()
        .map(|s| {
            let (plan, shared) = (plan.clone(), shared.clone());
            thread::Builder::new()
                .name(format!("load-{}", s.index))
                .spawn(move || client::run_worker(s, plan, shared))
        })
        .collect::<io::Result<_>>()?;
    let mut timeline = Vec::new();
    let clock = drive(args, &shared, &mut rss, &mut timeline);
    shared.phase.store(phase::STOP, Ordering::Release);
    let mut outcomes = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(o)) => outcomes.push(o),
            Ok(Err(e)) => eprintln!("ringws-load: worker failed: {e}"),
            Err(_) => eprintln!("ringws-load: worker panicked"),
        }
    }
    rss.end_bytes = rss_bytes(args.server_pid);
    let mut report = merge(args, &shared, &outcomes, &clock);
    report.workers = workers;
    report.src_ips = src_ips;
    report.rss = rss;
    report.timeline = timeline;
    if clock.deadline_hit {
        report.errors.deadline += 1;
    }
    if outcomes.len() != handles_len(workers) {
        report.errors.closed += 1;
    }
    Ok(report)
}

fn handles_len(workers: u32) -> usize {
    workers as usize
}

/// Steps the phases and samples the counters every 100 ms (progress line once a second).
fn drive(args: &Args, shared: &Shared, rss: &mut Rss, timeline: &mut Vec<Sample>) -> Clock {
    let total = u64::from(args.total_conns());
    let deadline_ns = args.deadline_ms() * 1_000_000;
    let mut clock = Clock {
        connect_end_ns: 0,
        run_start_ns: 0,
        run_end_ns: 0,
        deadline_hit: false,
        server_cpu_s: (0.0, 0.0),
        client_cpu_s: (0.0, 0.0),
    };
    let mut p = phase::CONNECT;
    let mut last = (0u64, 0u64); // (time, messages) at the last sample
    let mut drain_start_ns = 0;
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = shared.now_ns();
        if shared.interrupted.load(Ordering::Acquire) {
            clock.deadline_hit = true;
            clock.run_end_ns = now;
            break;
        }
        if now >= deadline_ns {
            eprintln!(
                "ringws-load: run deadline reached in phase {}",
                phase_name(p)
            );
            clock.deadline_hit = true;
            clock.run_end_ns = now;
            break;
        }
        if now >= last.0 + 1_000_000_000 {
            last = sample(args, shared, now, last, p, timeline);
        }
        let open = shared.open.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        match p {
            phase::CONNECT if open + failed >= total && start_due(args) => {
                clock.connect_end_ns = shared.last_open_ns.load(Ordering::Relaxed).max(1);
                rss.connected_bytes = rss_bytes(args.server_pid);
                if args.scenario == Scenario::Connect || open == 0 {
                    clock.run_end_ns = now;
                    break;
                }
                let publisher = u64::from(args.has_publisher());
                shared
                    .subscribers_open
                    .store(open.saturating_sub(publisher), Ordering::Release);
                if args.scenario.is_fanout() && !args.has_publisher() {
                    // A shard without the publisher: it expects `--broadcasts` from shard 1 and
                    // only waits for them (its drain lasts the duration and the grace).
                    let expected = args.broadcasts.unwrap_or(0);
                    shared.published.store(expected, Ordering::Release);
                    shared.publish_done.store(true, Ordering::Release);
                }
                clock.server_cpu_s.0 = cpu_s(args.server_pid);
                clock.client_cpu_s.0 = cpu_s(Some(std::process::id()));
                clock.run_start_ns = shared.now_ns();
                shared
                    .run_start_ns
                    .store(clock.run_start_ns, Ordering::Release);
                p = phase::RUN;
                shared.phase.store(p, Ordering::Release);
            }
            phase::RUN
                if !args.scenario.is_fanout()
                    && now >= clock.run_start_ns + args.duration_ms * 1_000_000 =>
            {
                clock.run_end_ns = now;
                break;
            }
            phase::RUN if !args.scenario.is_fanout() => {}
            phase::RUN if shared.publish_done.load(Ordering::Acquire) => {
                drain_start_ns = now;
                p = phase::DRAIN;
                shared.phase.store(p, Ordering::Release);
            }
            phase::DRAIN => {
                let publisher = u64::from(args.has_publisher());
                let open = shared
                    .open
                    .load(Ordering::Acquire)
                    .saturating_sub(publisher);
                let subscribers = open.min(shared.subscribers_open.load(Ordering::Acquire));
                let want = shared.published.load(Ordering::Acquire) * subscribers;
                let got = shared.messages.load(Ordering::Acquire);
                // Resume: also wait for the subscribers still away (they come back with a replay).
                let away = shared.away.load(Ordering::Acquire);
                let wait_ms = args.grace_ms + if publisher == 0 { args.duration_ms } else { 0 };
                if (got >= want && away == 0) || now >= drain_start_ns + wait_ms * 1_000_000 {
                    clock.run_end_ns = now;
                    break;
                }
            }
            _ => {}
        }
    }
    if clock.run_start_ns != 0 {
        clock.server_cpu_s.1 = cpu_s(args.server_pid);
        clock.client_cpu_s.1 = cpu_s(Some(std::process::id()));
    }
    if !args.quiet {
        sample(args, shared, shared.now_ns(), last, p, timeline);
    }
    clock
}

/// Whether the measured phase may begin (`--start-at-unix-ms`, else at once).
fn start_due(args: &Args) -> bool {
    args.start_at_unix_ms
        .is_none_or(|at| crate::load::stats::unix_ns() / 1_000_000 >= at)
}

fn sample(
    args: &Args,
    shared: &Shared,
    now: u64,
    last: (u64, u64),
    p: u8,
    timeline: &mut Vec<Sample>,
) -> (u64, u64) {
    let messages = shared.messages.load(Ordering::Relaxed);
    let secs = (now - last.0) as f64 / 1e9;
    let rate = if secs > 0.0 {
        (messages - last.1) as f64 / secs
    } else {
        0.0
    };
    let fanout = args.scenario.is_fanout();
    let s = Sample {
        t_s: now as f64 / 1e9,
        open: shared.open.load(Ordering::Relaxed),
        messages_per_s: if fanout { 0.0 } else { rate },
        deliveries_per_s: if fanout { rate } else { 0.0 },
        errors: shared.errors.load(Ordering::Relaxed),
    };
    if !args.quiet {
        eprintln!("{}", progress_line(&s, phase_name(p)));
    }
    timeline.push(s);
    (now, messages)
}

fn merge(args: &Args, shared: &Shared, outcomes: &[Outcome], clock: &Clock) -> Report {
    let mut latency = Latency::new();
    let mut broadcasts = Broadcasts::default();
    let mut report = Report {
        scenario: args.scenario.name().to_string(),
        connections: u64::from(args.conns),
        connected: shared.open.load(Ordering::Relaxed),
        payload_bytes: args.size as u64,
        ..Report::default()
    };
    let mut published = 0;
    let mut resumes = super::report::Resumes::default();
    let mut resume_latency = Latency::new();
    for o in outcomes {
        resumes.add(&o.resumes);
        resume_latency.merge(&o.resume_latency);
        latency.merge(&o.latency);
        broadcasts.merge(&o.broadcasts);
        report.errors.add(&o.errors);
        report.messages += o.messages;
        report.client_recv_enobufs += o.recv_enobufs;
        report.connect_retries += o.retries;
        report.compression.add(&o.compression);
        report.tls.add(&o.tls);
        for (code, reason) in o.close_codes.iter().take(1) {
            eprintln!("ringws-load: the server closed a connection: {code} {reason:?}");
        }
        published = published.max(o.published);
    }
    // A shard without the publisher: what it expected.
    published = published.max(shared.published.load(Ordering::Relaxed));
    report.shard = args.shard.map(|s| (s.index, s.count));
    report.latency_buckets = latency.buckets();
    // The connected count includes the publisher; the report counts subscribers.
    if args.scenario == Scenario::Resume {
        resumes.resume_p50_ns = resume_latency.quantile_ns(0.5);
        resumes.resume_p99_ns = resume_latency.quantile_ns(0.99);
        report.resumes = Some(resumes);
    }
    if args.scenario.is_fanout() {
        report.connected = report
            .connected
            .saturating_sub(u64::from(args.has_publisher()));
        report.deliveries = report.messages;
        report.messages = published;
        report.broadcasts = broadcasts.results(published);
        let subs = shared.subscribers_open.load(Ordering::Relaxed) as u32;
        report.fanout_complete_p50_ns = stats::complete_quantile_ns(&report.broadcasts, subs, 0.5);
        report.fanout_complete_p99_ns = stats::complete_quantile_ns(&report.broadcasts, subs, 0.99);
        report.fanout_complete_max_ns = stats::complete_quantile_ns(&report.broadcasts, subs, 1.0);
    }
    report.compression.offered = args.deflate;
    report.tls.on = args.tls;
    report.server_cpu_run_s = clock.server_cpu_s.1 - clock.server_cpu_s.0;
    report.client_cpu_run_s = clock.client_cpu_s.1 - clock.client_cpu_s.0;
    report.connect_s = clock.connect_end_ns.max(1) as f64 / 1e9;
    report.duration_s = clock.run_end_ns.saturating_sub(clock.run_start_ns) as f64 / 1e9;
    if args.scenario == Scenario::Connect {
        report.duration_s = report.connect_s;
    }
    report.latency_p50_ns = latency.quantile_ns(0.5);
    report.latency_p99_ns = latency.quantile_ns(0.99);
    report.latency_p999_ns = latency.quantile_ns(0.999);
    report.latency_max_ns = latency.max_ns();
    report.latency_curve = latency.curve();
    report
}
