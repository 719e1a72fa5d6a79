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
