//! The sans-IO RFC 6455 protocol core.
//!
//! Nothing in here opens a descriptor, reads a clock or makes a syscall: bytes go in, events and bytes
//! to send come out, and time (where it matters) is an argument. It is tested and fuzzed without a
//! kernel. The runtime (`crate::runtime`) drives it on io_uring; the load generator uses its client role.
#![forbid(unsafe_code)]

pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;
