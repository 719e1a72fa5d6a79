//! ringws: a WebSocket (RFC 6455) server engine for Linux on io_uring.
//!
//! ```text
//!  accept (multishot, direct fd) ─► recv (multishot, provided buffer ring)
//!        │                               │ bytes, in place
//!        ▼                               ▼
//!  proto::handshake (parse in place, 101/4xx)  ─►  proto::connection (frames, unmask in place,
//!                                                   UTF-8, reassembly, ping/pong, close)
//!                                                       │ events
//!                                                       ▼
//!                                              Handler (on_open / on_message / on_close / on_drain)
//!                                                       │ sends, publishes, closes
//!                                                       ▼
//!                                   per-connection send queue ─► one send per connection per loop turn
//! ```
//!
//! `proto` is the sans-IO core; `runtime` is the only module with io_uring and `unsafe`.

pub mod broker;
pub mod config;
pub mod handler;
pub mod history;
pub mod history_redis;
pub mod load;
pub mod metrics;
pub mod modes;
pub mod proto;
pub mod runtime;
pub mod server;
pub mod timer;
mod topics;

pub use config::{BackpressurePolicy, Config, TlsCertFiles, TlsSettings};
pub use handler::{
    Backpressure, Conn, ConnId, Handler, Message, OpenDecision, Publisher, Resume, UpgradeRequest,
    WorkerId,
};
pub use history::Position;
pub use server::{ServerHandle, run_until_signal, start};
