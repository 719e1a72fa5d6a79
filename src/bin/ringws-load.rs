//! `ringws-load`: the io_uring WebSocket load generator (echo, fanout, connect, idle).
//!
//! Prints a progress line each second (stderr), a table at the end (stdout), and writes a JSON
//! report and an SVG chart next to it with `--out`. Exits non-zero when the run had errors
//! (for fanout: any broadcast missing or out of order at any subscriber).

use std::fs;
use std::process::ExitCode;

use ringws::load::args::Args;
use ringws::load::{run, svg};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "-h" || a == "--help") {
        println!("{}", ringws::load::args::USAGE);
        return ExitCode::SUCCESS;
    }
    if argv.first().is_some_and(|a| a == "merge") {
        return merge(&argv[1..]);
    }
    let args = match Args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringws-load: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match run::run(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringws-load: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", report.table());
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = fs::create_dir_all(dir);
        }
        let chart = out.with_extension("svg");
        if let Err(e) =
            fs::write(out, report.to_json()).and_then(|()| fs::write(&chart, svg::render(&report)))
        {
            eprintln!("ringws-load: writing {}: {e}", out.display());
            return ExitCode::from(1);
        }
        println!("report: {}  chart: {}", out.display(), chart.display());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `ringws-load merge OUT.json IN.json...`: the shards' reports combined (table and JSON).
fn merge(argv: &[String]) -> ExitCode {
    let [out, inputs @ ..] = argv else {
        eprintln!("ringws-load: usage: ringws-load merge OUT.json IN.json [IN.json...]");
        return ExitCode::from(2);
    };
    let texts: Result<Vec<String>, _> = inputs.iter().map(fs::read_to_string).collect();
    let report = match texts
        .map_err(|e| e.to_string())
        .and_then(|t| ringws::load::merge::merge(&t).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringws-load merge: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Err(e) = fs::write(out, report.to_json()) {
        eprintln!("ringws-load merge: writing {out}: {e}");
        return ExitCode::from(1);
    }
    println!("report: {out}");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
