//! The load generator's sans-IO parts: command line, payloads, sequence checks, statistics, the
//! report (table, JSON) and the chart (SVG). The io_uring client that drives connections lives in
//! `crate::runtime::client`; `run` ties the two together with threads and a clock.
#![forbid(unsafe_code)]

pub mod args;
pub mod merge;
pub mod payload;
pub mod report;
pub mod run;
pub mod seq;
pub mod stats;
pub mod svg;
